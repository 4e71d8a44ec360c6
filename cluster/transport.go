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

	"github.com/atomcloud/atomfed/internal/node"
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
		// Streams to peers leave from the bind address (see sourcebind.go).
		source := ln.Addr().(*net.TCPAddr).IP
		if source.IsUnspecified() {
			source = nil
		}
		dial = func(address string, timeout time.Duration) (net.Conn, error) {
			return node.SourceDialer(source, timeout).Dial("tcp", address)
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

// Dial opens a raft stream to a peer. The stream replaces itself with a
// fresh one when the peer has closed it while it sat in raft's pool (see
// poolSafeConn).
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, raw, err := s.dialStream(string(address), timeout)
	if err != nil {
		return nil, err
	}
	return &poolSafeConn{Conn: c, raw: raw, tls: s.tls != nil,
		redial: func() (net.Conn, net.Conn, error) { return s.dialStream(string(address), timeout) }}, nil
}

// dialStream opens a connection to a peer's raft port, for raft or for
// the forwarding RPC: through the stream layer's dialer (from the bind
// address, or through the chaos harness's dialer), then the TLS handshake
// when the transport is secured. It returns the connection to use and the
// TCP connection under it.
func (s *streamLayer) dialStream(address string, timeout time.Duration) (net.Conn, net.Conn, error) {
	c, err := s.dial(address, timeout)
	if err != nil || s.tls == nil {
		return c, c, err
	}
	tc := tls.Client(c, s.tls.Client)
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("raft TLS handshake with %s: %w", address, err)
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, c, nil
}

// TLSConfig secures the Raft transport: Server verifies every peer's
// client certificate (mutual TLS), Client presents this server's
// certificate and checks the peer's.
type TLSConfig struct {
	Server *tls.Config
	Client *tls.Config
}

// poolSafeConn is an outgoing raft stream that checks, when an RPC starts
// on it, whether the peer closed it meanwhile, and if so sends the RPC on
// a fresh connection instead.
//
// Raft keeps up to MaxPool idle streams per peer and never checks them:
// after a peer restarts, every pooled stream to it is dead, and each RPC
// that takes one fails with EOF. An election in which a candidate's vote
// requests fail this way waits a whole election timeout per dead stream;
// the chaos suite measured 2-3 s leader failovers with 80 ms round trips
// (one timeout per stream) after a peer had restarted. Raft's RPCs are
// request/response on a stream (pipelining is off, see setupRaft), so the
// first write after a read, or on a new stream, starts an RPC and nothing
// has been sent yet. It is not safe for concurrent use, which raft's
// streams never see; the forwarding RPC, which reads and writes at once,
// dials with dialStream instead.
type poolSafeConn struct {
	net.Conn
	// raw is the TCP connection under Conn, which is a TLS connection
	// when tls is set.
	raw    net.Conn
	tls    bool
	redial func() (net.Conn, net.Conn, error)
	// inRPC is set by a write and cleared by a read; answered is set once
	// a read has returned, i.e. the stream has carried an RPC.
	inRPC, answered bool
	// Deadlines raft set, carried over to a replacement stream.
	readDL, writeDL time.Time
}

// stale reports whether the peer has let go of the idle stream. A TCP
// stream is stale when the peer closed or reset it. A TLS stream is stale
// too when data waits on it after it has carried an RPC: between RPCs a
// raft peer sends nothing but the TLS close_notify that precedes its FIN
// (a session ticket can only wait before the first answer, which reads
// it).
func (c *poolSafeConn) stale() bool {
	switch peerState(c.raw) {
	case peerGone:
		return true
	case peerSentData:
		return c.tls && c.answered
	}
	return false
}

func (c *poolSafeConn) Write(b []byte) (int, error) {
	if !c.inRPC {
		c.inRPC = true
		if c.stale() {
			nc, raw, err := c.redial()
			if err != nil {
				return 0, err
			}
			_ = c.Conn.Close()
			c.Conn, c.raw, c.answered = nc, raw, false
			_ = nc.SetReadDeadline(c.readDL)
			_ = nc.SetWriteDeadline(c.writeDL)
		}
	}
	return c.Conn.Write(b)
}

func (c *poolSafeConn) Read(b []byte) (int, error) {
	c.inRPC = false
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.answered = true
	}
	return n, err
}

func (c *poolSafeConn) SetDeadline(t time.Time) error {
	c.readDL, c.writeDL = t, t
	return c.Conn.SetDeadline(t)
}

func (c *poolSafeConn) SetReadDeadline(t time.Time) error {
	c.readDL = t
	return c.Conn.SetReadDeadline(t)
}

func (c *poolSafeConn) SetWriteDeadline(t time.Time) error {
	c.writeDL = t
	return c.Conn.SetWriteDeadline(t)
}

// mainLoopTransport is the raft transport with raft's heartbeat fast path
// turned off, so that every AppendEntries, heartbeats included, is handled
// by raft's main goroutine.
//
// With the fast path, raft handles a heartbeat on the transport's reader
// goroutine, and a heartbeat from a newer leader raises the current term
// there, concurrently with the main goroutine. An old leader that is about
// to append client commands then stamps them with the new leader's term at
// indexes where the new leader wrote its own entries, and raft's log
// matching (same index and term, same entry) no longer holds: servers apply
// different commands at one index (hashicorp/raft#695). atomfed's chaos
// suite found this as audit heads that differ after a paused leader came
// back (TestChaosShort, about 1 run in 30). Without the fast path a
// heartbeat waits behind the main goroutine's current disk write, which is
// well under a millisecond against a heartbeat timeout of 150 ms or more.
type mainLoopTransport struct {
	*raft.NetworkTransport
}

// SetHeartbeatHandler ignores the fast-path handler raft installs.
func (mainLoopTransport) SetHeartbeatHandler(func(raft.RPC)) {}
