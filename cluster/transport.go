package cluster

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is the raft.StreamLayer behind the network transport: a TCP
// listener plus a dialer that tests and the chaos harness can replace.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	dial      func(address string, timeout time.Duration) (net.Conn, error)

	// Accepted connections, tracked until the transport's handler lets go
	// of them (see drain).
	mu       sync.Mutex
	accepted map[*acceptedConn]struct{}
	handlers sync.WaitGroup
	draining bool
	tls      *TLSConfig

	// Connections whose first byte is fwdMagic carry the forwarding RPC
	// (fwd handles them); every other one is raft's.
	fwd      func(net.Conn)
	raftCh   chan net.Conn
	closed   chan struct{}
	once     sync.Once
	startOne sync.Once
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(bind, advertise string, dial func(string, time.Duration) (net.Conn, error)) (*streamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft transport listen on %s: %w", bind, err)
	}
	var adv net.Addr = ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
		}
		adv = a
	}
	if ta, ok := adv.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		ln.Close()
		return nil, errors.New("raft advertise address is unspecified (0.0.0.0): set --raft-advertise to a routable address")
	}
	if dial == nil {
		dial = func(address string, timeout time.Duration) (net.Conn, error) {
			return net.DialTimeout("tcp", address, timeout)
		}
	}
	return &streamLayer{Listener: ln, advertise: adv, dial: dial, accepted: map[*acceptedConn]struct{}{},
		raftCh: make(chan net.Conn), closed: make(chan struct{})}, nil
}

// fwdMagic opens a forwarding-RPC connection on the raft port; raft's own
// RPC types are small numbers.
const fwdMagic byte = 0xA7

// routeTimeout bounds how long a new connection may take to complete its
// TLS handshake and send its first byte.
const routeTimeout = 10 * time.Second

// Accept returns the next raft connection. Connections are accepted and
// routed in the background, so a slow peer never holds up the others.
func (s *streamLayer) Accept() (net.Conn, error) {
	s.startOne.Do(func() { go s.acceptLoop() })
	select {
	case c := <-s.raftCh:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

func (s *streamLayer) acceptLoop() {
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			s.stop()
			return
		}
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			c.Close()
			continue
		}
		ac := &acceptedConn{Conn: c, s: s}
		s.accepted[ac] = struct{}{}
		s.handlers.Add(1)
		s.mu.Unlock()
		go s.route(ac)
	}
}

// route completes the TLS handshake (a peer without a certificate of the
// federation CA gets no further), reads the first byte and hands the
// connection to raft or to the forwarding RPC.
func (s *streamLayer) route(ac *acceptedConn) {
	var c net.Conn = ac
	if s.tls != nil {
		c = tls.Server(ac, s.tls.Server)
	}
	_ = c.SetReadDeadline(time.Now().Add(routeTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	pc := &peekedConn{Conn: c, r: br}
	if first[0] == fwdMagic && s.fwd != nil {
		_, _ = br.ReadByte()
		s.fwd(pc)
		return
	}
	select {
	case s.raftCh <- pc:
	case <-s.closed:
		c.Close()
	}
}

func (s *streamLayer) stop() { s.once.Do(func() { close(s.closed) }) }

// Close stops accepting.
func (s *streamLayer) Close() error {
	s.stop()
	return s.Listener.Close()
}

// peekedConn replays the byte read while routing.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// drain closes every accepted connection and waits, up to timeout, until
// the transport's handlers have closed theirs too. Raft answers heartbeats
// on the handler goroutine, outside raft.Shutdown's reach, and panics if
// the stable store is closed under it: the stores may close only after
// this returns.
func (s *streamLayer) drain(timeout time.Duration) bool {
	s.mu.Lock()
	s.draining = true
	for c := range s.accepted {
		c.Conn.Close() // the handler's read fails and it closes c
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// acceptedConn is an accepted connection whose Close tells the stream
// layer that its handler is done.
type acceptedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *acceptedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.accepted, c)
		c.s.mu.Unlock()
		c.s.handlers.Done()
	})
	return err
}

// Addr returns the advertised address, which is what peers dial.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial opens a stream to a peer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.dial(string(address), timeout)
	if err != nil || s.tls == nil {
		return c, err
	}
	tc := tls.Client(c, s.tls.Client)
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft TLS handshake with %s: %w", address, err)
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// TLSConfig secures the Raft transport: Server verifies every peer's
// client certificate (mutual TLS), Client presents this server's
// certificate and checks the peer's.
type TLSConfig struct {
	Server *tls.Config
	Client *tls.Config
}
