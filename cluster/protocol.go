package cluster

import (
	"fmt"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/node"
)

// Protocol versions (node.ProtocolVersion, with the history and the
// rolling-upgrade rule) at which each feature starts.
const (
	protocolMsgpack    = 2
	protocolForwardRPC = 2
	protocolBatch      = 2
	// protocolForwardCaller: a forwarded write names its caller's token
	// and the leader checks the caller's authority itself.
	protocolForwardCaller = 4
)

// commandProtocol is the protocol version from which a command may be
// logged: every server that applies the log must know it (a command a
// server does not know stops it). Commands not listed need version 1.
var commandProtocol = map[fsm.MessageType]int{
	fsm.TasksRefenceType: 3,
	fsm.TenantPatchType:  3,

	fsm.BootstrapRetireType: 4,
	fsm.SnapshotRestoreType: 4,
	fsm.ApprovalPruneType:   4,

	fsm.SwitchoverStartType:   4,
	fsm.SwitchoverAdvanceType: 4,
	fsm.DivergenceRecordType:  4,
	fsm.SwitchoverAbortType:   4,
	fsm.FailoverStartType:     4,
	fsm.FailoverAutoType:      4,
	fsm.FailoverHoldType:      4,
	fsm.BackupPolicySetType:   4,
	fsm.BackupRequestType:     4,
	fsm.BackupRecordType:      4,
	fsm.DrillRequestType:      4,
	fsm.DrillRecordType:       4,
	fsm.RebuildRequestType:    4,
	fsm.RebuildRecordType:     4,
}

// protocolCache is the cluster's protocol view, recomputed at most once a
// second (it reads the raft configuration and the Serf member list).
type protocolCache struct {
	mu     sync.Mutex
	at     time.Time
	min    int    // lowest version among the servers in the configuration
	leader string // leader id the view was computed for
	lead   int    // the leader's version, 0 when unknown
}

// protocol returns the version this server advertises (tests pin older
// ones through Config.Protocol).
func (s *Server) protocol() int {
	if s.cfg.Protocol > 0 {
		return s.cfg.Protocol
	}
	return node.ProtocolVersion
}

// Protocols returns the protocol version the cluster speaks (the lowest
// among the servers in the raft configuration) and the leader's, as this
// server sees them (refreshed every second).
func (s *Server) Protocols() (cluster, leader int) { return s.protocols() }

// protocols returns the lowest protocol version of the servers in the raft
// configuration (a server Serf does not know counts as 1) and the leader's
// (0 when no leader is known).
func (s *Server) protocols() (min, leader int) {
	_, lid := s.raft.LeaderWithID()
	c := &s.proto
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < time.Second && c.leader == string(lid) {
		return c.min, c.lead
	}
	versions := map[string]int{}
	for _, sm := range s.serverMembers() {
		versions[sm.ID] = sm.Protocol
	}
	versions[s.cfg.NodeID] = s.protocol()
	min = s.protocol()
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			v, ok := versions[string(srv.ID)]
			if !ok {
				v = 1
			}
			if v < min {
				min = v
			}
		}
	}
	leader = 0
	if lid != "" {
		leader = versions[string(lid)]
	}
	c.at, c.min, c.leader, c.lead = time.Now(), min, string(lid), leader
	return min, leader
}

// encode encodes a command with the codec every server can read.
func (s *Server) encode(t fsm.MessageType, body any) ([]byte, error) {
	min, _ := s.protocols()
	if need := commandProtocol[t]; min < need {
		return nil, fmt.Errorf("%w (%s needs protocol %d, the cluster speaks %d)", ErrUpgradeInProgress, t, need, min)
	}
	if r, ok := body.(fsm.Ruled); ok {
		// Logged under the rules every server of the configuration
		// applies (fsm/rules.go).
		body = r.WithRules(min)
	}
	codec := fsm.CodecMsgpack
	if min < protocolMsgpack {
		codec = fsm.CodecJSON
	}
	return fsm.EncodeWith(codec, t, body)
}

// leaderServesRPC reports whether the current leader serves the forwarding
// RPC.
func (s *Server) leaderServesRPC() bool {
	_, leader := s.protocols()
	return leader >= protocolForwardRPC
}
