package cluster

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// acceptFrom listens on 127.0.0.1 and returns the listener's address and
// a channel that yields the remote IP of the first accepted connection.
func acceptFrom(t *testing.T) (string, <-chan net.IP) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.IP, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		ch <- c.RemoteAddr().(*net.TCPAddr).IP
		c.Close()
	}()
	return ln.Addr().String(), ch
}

func wantSource(t *testing.T, ch <-chan net.IP, want string) {
	t.Helper()
	select {
	case ip := <-ch:
		if ip.String() != want {
			t.Fatalf("connection came from %s, want the bind address %s", ip, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no connection arrived")
	}
}

// TestRaftStreamDialsFromBindAddress: a Raft transport bound to one
// specific address opens its streams to peers from that address.
func TestRaftStreamDialsFromBindAddress(t *testing.T) {
	peer, from := acceptFrom(t)
	s, err := newStreamLayer("127.0.0.23:0", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := s.Dial("tcp", 0)
	if err == nil {
		c.Close()
		t.Fatal("dialing the bad address \"tcp\" succeeded")
	}
	if c, err = s.Dial(raft.ServerAddress(peer), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wantSource(t, from, "127.0.0.23")
}

// TestForwardingRPCDialsFromBindAddress: the forwarding RPC, which shares
// the raft port, dials the leader the way raft does (from the bind
// address, through the stream layer's dialer), on a plain connection: it
// reads and writes at once, which raft's pooled-stream wrapper does not
// allow.
func TestForwardingRPCDialsFromBindAddress(t *testing.T) {
	peer, from := acceptFrom(t)
	s, err := newStreamLayer("127.0.0.25:0", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := &fwdClient{s: &Server{stream: s}}
	c, err := f.conn(peer)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close(ErrShuttingDown)
	wantSource(t, from, "127.0.0.25")
	if _, wrapped := c.c.(*poolSafeConn); wrapped {
		t.Fatal("the forwarding RPC's connection is wrapped for raft's pool")
	}
}

// TestGossipDialsFromBindAddress: Serf's memberlist transport, bound to one
// specific address, opens its TCP streams from it, and its UDP packets
// leave from it too.
func TestGossipDialsFromBindAddress(t *testing.T) {
	peer, from := acceptFrom(t)
	conf, err := serfConfig(nil, "n1", "127.0.0.24:0", "", nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	gt, ok := conf.MemberlistConfig.Transport.(*gossipTransport)
	if !ok {
		t.Fatalf("memberlist transport is %T, want *gossipTransport", conf.MemberlistConfig.Transport)
	}
	defer gt.Shutdown()
	if conf.MemberlistConfig.BindPort == 0 {
		t.Fatal("bind port 0 was not replaced by the port the transport got")
	}
	c, err := gt.DialTimeout(peer, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wantSource(t, from, "127.0.0.24")

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := gt.WriteTo([]byte("ping"), pc.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	_, addr, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if ip := addr.(*net.UDPAddr).IP.String(); ip != "127.0.0.24" {
		t.Fatalf("gossip packet came from %s, want 127.0.0.24", ip)
	}
}

// TestWildcardBindLeavesSourceToKernel: a wildcard or named bind host is
// not pinned, so the default transports stay in place.
func TestWildcardBindLeavesSourceToKernel(t *testing.T) {
	for _, host := range []string{"0.0.0.0", "::", "localhost", ""} {
		if ip := specificIP(host); ip != nil {
			t.Errorf("specificIP(%q) = %s, want nil", host, ip)
		}
	}
	if ip := specificIP("10.0.0.1"); ip == nil || ip.String() != "10.0.0.1" {
		t.Errorf("specificIP(10.0.0.1) = %v", ip)
	}
	conf, err := serfConfig(nil, "n1", "0.0.0.0:0", "", nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if conf.MemberlistConfig.Transport != nil {
		t.Fatalf("a wildcard bind got transport %T; want memberlist's own", conf.MemberlistConfig.Transport)
	}
}
