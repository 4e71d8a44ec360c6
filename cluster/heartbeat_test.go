package cluster

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The wrapper must keep what raft looks for on its transport: pre-vote.
var _ raft.WithPreVote = mainLoopTransport{}

// sendHeartbeat sends a heartbeat (an AppendEntries with no entries and a
// zero previous log, which is what raft's transport routes to its fast
// path) from a new transport to to, and reports which way it arrived.
func sendHeartbeat(t *testing.T, to raft.Transport, fastPath <-chan raft.RPC) string {
	t.Helper()
	from, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("new-leader"), Addr: []byte(from.LocalAddr())},
		Term:      7,
	}
	errc := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		errc <- from.AppendEntries("old-leader", to.LocalAddr(), req, &resp)
	}()
	way := ""
	select {
	case rpc := <-fastPath:
		way = "fast path"
		rpc.Respond(&raft.AppendEntriesResponse{Term: 7}, nil)
	case rpc := <-to.Consumer():
		way = "main loop"
		rpc.Respond(&raft.AppendEntriesResponse{Term: 7}, nil)
	case <-time.After(10 * time.Second):
		t.Fatal("the heartbeat did not arrive")
	}
	if err := <-errc; err != nil {
		t.Fatalf("heartbeat RPC: %v", err)
	}
	return way
}

// TestHeartbeatsReachTheMainLoop: a heartbeat that raises the term must be
// handled by raft's main goroutine, never by the transport's reader, or a
// stepping-down leader can append its commands under the new leader's
// term (hashicorp/raft#695). The plain transport is the control: it hands
// the same heartbeat to the installed fast-path handler.
func TestHeartbeatsReachTheMainLoop(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(*raft.NetworkTransport) raft.Transport
		want string
	}{
		{"atomfed's transport", func(n *raft.NetworkTransport) raft.Transport { return mainLoopTransport{n} }, "main loop"},
		{"raft's transport as is", func(n *raft.NetworkTransport) raft.Transport { return n }, "fast path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nt, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			defer nt.Close()
			tr := tc.wrap(nt)
			fast := make(chan raft.RPC, 1)
			tr.SetHeartbeatHandler(func(rpc raft.RPC) { fast <- rpc }) // what raft.NewRaft does
			if got := sendHeartbeat(t, tr, fast); got != tc.want {
				t.Fatalf("the heartbeat took the %s, want the %s", got, tc.want)
			}
		})
	}
}
