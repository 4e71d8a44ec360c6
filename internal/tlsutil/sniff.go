package tlsutil

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// SniffListener serves TLS and plain TCP on one port: a connection whose
// first byte opens a TLS handshake (0x16) is wrapped with tls.Server, any
// other is passed on as is. The HTTP server can then tell them apart by
// http.Request.TLS and answer plain HTTP only where that is safe (/health,
// /metrics), and point everything else to https.
func SniffListener(ln net.Listener, cfg *tls.Config) net.Listener {
	s := &sniffer{Listener: ln, cfg: cfg, conns: make(chan net.Conn), done: make(chan struct{})}
	go s.acceptLoop()
	return s
}

type sniffer struct {
	net.Listener
	cfg   *tls.Config
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error
}

// sniffTimeout bounds how long a new connection may take to send its first
// byte.
const sniffTimeout = 10 * time.Second

func (s *sniffer) acceptLoop() {
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			s.err = err
			s.Close()
			return
		}
		go s.sniff(c)
	}
}

func (s *sniffer) sniff(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	var out net.Conn = &peekedConn{Conn: c, r: br}
	if first[0] == 0x16 { // TLS handshake record
		out = tls.Server(out, s.cfg)
	}
	select {
	case s.conns <- out:
	case <-s.done:
		c.Close()
	}
}

// Accept returns the next connection, TLS or plain.
func (s *sniffer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		if s.err != nil {
			return nil, s.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting.
func (s *sniffer) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.Listener.Close()
	})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// peekedConn replays the bytes read while sniffing.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }
