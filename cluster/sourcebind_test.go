package cluster

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestRaftStreamDialsFromBindAddress: a Raft transport bound to one
// specific address opens its streams to peers from that address.
func TestRaftStreamDialsFromBindAddress(t *testing.T) {
	peer, from := testutil.AcceptFrom(t)
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
	testutil.WantSource(t, from, "127.0.0.23")
}

// TestForwardingRPCDialsFromBindAddress: the forwarding RPC, which shares
// the raft port, dials the leader the way raft does (from the bind
// address, through the stream layer's dialer), on a plain connection: it
// reads and writes at once, which raft's pooled-stream wrapper does not
// allow.
func TestForwardingRPCDialsFromBindAddress(t *testing.T) {
	peer, from := testutil.AcceptFrom(t)
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
	testutil.WantSource(t, from, "127.0.0.25")
	if _, wrapped := c.c.(*poolSafeConn); wrapped {
		t.Fatal("the forwarding RPC's connection is wrapped for raft's pool")
	}
}
