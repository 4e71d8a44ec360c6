package cluster

import (
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
			return sourceDialer(source, timeout).Dial("tcp", address)
		}
	}
	return &streamLayer{Listener: ln, advertise: adv, dial: dial, accepted: map[*acceptedConn]struct{}{}}, nil
}

// Accept accepts a peer's connection and tracks it until it is closed.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		c.Close()
		return nil, net.ErrClosed
	}
	ac := &acceptedConn{Conn: c, s: s}
	s.accepted[ac] = struct{}{}
	s.handlers.Add(1)
	return ac, nil
}

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

// Dial opens a stream to a peer. The stream replaces itself with a fresh
// one when the peer has closed it while it sat in raft's pool (see
// poolSafeConn).
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.dial(string(address), timeout)
	if err != nil {
		return nil, err
	}
	return &poolSafeConn{Conn: c, redial: func() (net.Conn, error) { return s.dial(string(address), timeout) }}, nil
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
// has been sent yet.
type poolSafeConn struct {
	net.Conn
	redial func() (net.Conn, error)
	// inRPC is set by a write and cleared by a read.
	inRPC bool
	// Deadlines raft set, carried over to a replacement stream.
	readDL, writeDL time.Time
}

func (c *poolSafeConn) Write(b []byte) (int, error) {
	if !c.inRPC {
		c.inRPC = true
		if peerClosed(c.Conn) {
			nc, err := c.redial()
			if err != nil {
				return 0, err
			}
			_ = c.Conn.Close()
			c.Conn = nc
			_ = nc.SetReadDeadline(c.readDL)
			_ = nc.SetWriteDeadline(c.writeDL)
		}
	}
	return c.Conn.Write(b)
}

func (c *poolSafeConn) Read(b []byte) (int, error) {
	c.inRPC = false
	return c.Conn.Read(b)
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
