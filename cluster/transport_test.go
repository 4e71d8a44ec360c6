package cluster

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
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
	for deadline := time.Now().Add(5 * time.Second); !peerClosed(pc.Conn); {
		if time.Now().After(deadline) {
			t.Fatal("the peer's close never arrived")
		}
		time.Sleep(5 * time.Millisecond) // poll for the FIN
	}

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
