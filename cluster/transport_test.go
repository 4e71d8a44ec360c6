package cluster

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// TestPooledStreamSurvivesPeerRestart: a raft stream that the peer closed
// while it sat idle (the peer restarted) carries the next RPC on a fresh
// connection instead of failing it with EOF, which cost an election
// timeout per pooled stream in the chaos suite's leader failovers.
func TestPooledStreamSurvivesPeerRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan struct{})
	served := make(chan string, 1)
	go func() {
		first, err := ln.Accept()
		if err != nil {
			return
		}
		first.Close() // the peer restarts: its end of the pooled stream is gone
		close(closed)
		second, err := ln.Accept()
		if err != nil {
			return
		}
		defer second.Close()
		line, _ := bufio.NewReader(second).ReadString('\n')
		served <- line
		_, _ = second.Write([]byte("pong\n"))
	}()

	s, err := newStreamLayer("127.0.0.1:0", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := s.Dial(raft.ServerAddress(ln.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	<-closed
	pc := conn.(*poolSafeConn)
	testutil.Eventually(t, 5*time.Second, func() error {
		if peerState(pc.raw) != peerGone {
			return errors.New("the peer's close (FIN) has not arrived")
		}
		return nil
	})

	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatalf("write on a stream whose peer restarted: %v", err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || reply != "pong\n" {
		t.Fatalf("the RPC after the peer restarted got %q, %v; want it carried on a fresh stream", reply, err)
	}
	if got := <-served; got != "ping\n" {
		t.Fatalf("the peer got %q", got)
	}
}

// TestPooledStreamKeepsLiveConnection: a stream whose peer is alive is
// used as is across RPCs.
func TestPooledStreamKeepsLiveConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			go func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						c.Close()
						return
					}
					_, _ = c.Write([]byte(line))
				}
			}()
		}
	}()
	s, err := newStreamLayer("127.0.0.1:0", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := s.Dial(raft.ServerAddress(ln.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	for i := 0; i < 3; i++ {
		if _, err := conn.Write([]byte("rpc\n")); err != nil {
			t.Fatal(err)
		}
		if got, err := r.ReadString('\n'); err != nil || got != "rpc\n" {
			t.Fatalf("rpc %d: %q, %v", i, got, err)
		}
	}
	if n := len(accepted); n != 1 {
		t.Fatalf("%d connections for 3 RPCs on a live stream, want 1", n)
	}
}

// TestPooledTLSStreamSurvivesPeerClose: on the mutual-TLS transport a peer
// that closes an idle stream sends close_notify before its FIN, so data
// waits on the stream rather than its end; the next RPC still goes on a
// fresh connection. A fresh stream whose only waiting data is the session
// ticket is kept.
func TestPooledTLSStreamSurvivesPeerClose(t *testing.T) {
	serverTLS, clientTLS := transportTLS(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 4)
	closeFirst := make(chan struct{})
	closed := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			go func(c net.Conn, first bool) {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
					if first {
						<-closeFirst
						c.Close() // graceful: close_notify, then FIN
						close(closed)
						return
					}
				}
			}(c, i == 0)
		}
	}()

	s, err := newStreamLayer("127.0.0.1:0", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.tls = &TLSConfig{Server: serverTLS, Client: clientTLS}
	conn, err := s.Dial(raft.ServerAddress(ln.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pc := conn.(*poolSafeConn)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	rpc := func(what string) {
		t.Helper()
		if _, err := conn.Write([]byte(what + "\n")); err != nil {
			t.Fatalf("%s: write: %v", what, err)
		}
		buf := make([]byte, len(what)+1)
		for n := 0; n < len(buf); {
			m, err := conn.Read(buf[n:])
			if err != nil {
				t.Fatalf("%s: read: %v", what, err)
			}
			n += m
		}
		if string(buf) != what+"\n" {
			t.Fatalf("%s: answer %q", what, buf)
		}
	}
	rpc("first")
	if n := len(accepted); n != 1 {
		t.Fatalf("%d connections for the first RPC, want 1", n)
	}
	close(closeFirst)
	<-closed
	testutil.Eventually(t, 5*time.Second, func() error {
		if peerState(pc.raw) == peerQuiet {
			return errors.New("the peer's close_notify has not arrived")
		}
		return nil
	})
	rpc("second")
	if n := len(accepted); n != 2 {
		t.Fatalf("%d connections after the peer closed the first, want 2", n)
	}
	rpc("third")
	if n := len(accepted); n != 2 {
		t.Fatalf("%d connections after an RPC on a live TLS stream, want 2", n)
	}
}

// transportTLS returns the raft transport's server and client TLS configs
// for a node of a fresh CA.
func transportTLS(t *testing.T) (*tls.Config, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	ca, err := tlsutil.NewCA("transport test CA")
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caPath, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := ca.WriteNode(dir, "node", caPath, []string{"node", tlsutil.ServerName}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	server, err := tlsutil.ServerConfig(f, true)
	if err != nil {
		t.Fatal(err)
	}
	client, err := tlsutil.ClientConfig(f, tlsutil.ServerName)
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}
