package cluster

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/signing"
)

// Base Raft timings for a LAN: a follower notices a lost leader after
// 150-300 ms of silence and an election on a LAN completes in a few
// milliseconds, so leadership is repaired well under a second (about 330 ms
// median after kill -9 of the leader on the benchmark machine, where 200 ms,
// Consul's "raft_multiplier = 1", gave 380-500 ms). An election needs the
// second follower to time out as well: until then it still has a leader and
// refuses to vote, so the repair takes the later of the two followers'
// random timeouts. RaftMultiplier scales all three for WAN
// links; see Config.RaftMultiplier. The leader lease equals the heartbeat
// timeout: a leader whose process is starved of CPU for a moment (a busy
// shared host) keeps its leadership instead of stepping down after half the
// heartbeat timeout, and since reads confirm leadership with a quorum (read
// index), never with the lease, the longer lease costs no consistency; a
// partitioned leader steps down within 150 ms.
const (
	BaseHeartbeatTimeout   = 150 * time.Millisecond
	BaseElectionTimeout    = 150 * time.Millisecond
	BaseLeaderLeaseTimeout = 150 * time.Millisecond
)

// Config configures a server. cmd builds it from flags and environment; no
// other package reads flags or the environment.
type Config struct {
	// NodeID names the server; it is also its Raft server ID and Serf node
	// name, and must be unique in the federation.
	NodeID string
	// Region is the region the server runs in.
	Region string
	// DataDir holds the Raft log, stable store, snapshots and Serf snapshot.
	DataDir string

	// RaftBindAddr is the address the Raft transport listens on
	// (host:port; port 0 picks a free one). RaftAdvertiseAddr is the address
	// other servers dial; empty means the bound address.
	RaftBindAddr      string
	RaftAdvertiseAddr string
	// SerfBindAddr and SerfAdvertiseAddr are the same for Serf gossip.
	SerfBindAddr      string
	SerfAdvertiseAddr string
	// HTTPAdvertiseURL is the base URL of this server's HTTP API
	// (e.g. http://10.0.0.1:8401), gossiped so followers can forward.
	HTTPAdvertiseURL string

	// BootstrapExpect is the number of servers to wait for before forming a
	// new cluster. 0 means never bootstrap: wait to be added by a leader.
	BootstrapExpect int
	// Join lists Serf addresses to join at start; joining is retried in the
	// background until one succeeds.
	Join []string
	// NonVoter joins this server as a Raft non-voter: it replicates the state
	// and serves stale reads but does not count towards quorum.
	NonVoter bool

	// RaftMultiplier scales the Raft timings for slower links. 1 suits a LAN
	// (sub-millisecond RTT). For a cluster spanning regions use a value whose
	// heartbeat timeout (150 ms x multiplier) is at least 5 times the worst
	// round trip between servers: 3 for RTTs up to 90 ms, 7 up to 210 ms.
	RaftMultiplier int
	// RaftTimings overrides the base timings entirely (tests use ~50 ms).
	RaftTimings *RaftTimings
	// MaxAppendEntries bounds how many entries go in one AppendEntries RPC
	// and one group commit.
	MaxAppendEntries int
	// SnapshotThreshold and SnapshotInterval control automatic snapshots.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many log entries are kept after a snapshot.
	TrailingLogs uint64
	// LogStore picks the raft log store: LogStoreSegment (the default; one
	// fdatasync per append, see internal/raftlog) or LogStoreBolt (the log
	// in raft.db with the stable store; two fdatasyncs per append). A data
	// dir whose log is in raft.db moves to segments when it opens with
	// LogStoreSegment; the way back is refused.
	LogStore string

	// Memberlist, when set, replaces the default LAN memberlist settings
	// (tests shorten probe intervals). Bind and advertise fields are
	// overwritten from the addresses above.
	Memberlist *memberlist.Config

	// DeadServerCleanupAfter is how long Serf must report a server failed
	// before the leader removes it from the Raft configuration, provided a
	// healthy majority of voters remains. 0 disables the cleanup.
	DeadServerCleanupAfter time.Duration

	// FailoverDetect is how long the leader must see a tenant's home
	// region down (every agent failed in Serf) before the tenant's
	// automatic failover policy fails it over (0: the default,
	// fsm.DefaultFailoverDetectMS).
	FailoverDetect time.Duration
	// MinQuorum is the smallest voter count cleanup may leave behind.
	MinQuorum int
	// ReconcileInterval is how often the leader reconciles every Serf member
	// into the Raft configuration, besides doing so on each Serf event.
	ReconcileInterval time.Duration

	// Dial, when set, replaces the TCP dialer of the Raft transport. The
	// default dials from the Raft bind address when that is one specific
	// address (see sourcebind.go).
	Dial func(address string, timeout time.Duration) (net.Conn, error)

	// Signer is the server's signing key: it signs trust bundles, and the
	// leader records it as a trust member from the server's Serf tags.
	Signer *signing.Signer
	// GossipKey, when set, encrypts Serf gossip (32 bytes, AES-256-GCM).
	GossipKey []byte
	// TLS, when set, secures the Raft transport with mutual TLS.
	TLS *TLSConfig

	// Protocol, when set, is the protocol version this server advertises
	// and speaks instead of node.ProtocolVersion (tests of rolling upgrades).
	Protocol int

	// Now, when set, is the clock the leader checks forwarded commands'
	// stamps against (tests that move the servers' clock); nil is time.Now.
	Now func() time.Time

	// FSM is the state machine; New creates one when nil.
	FSM *fsm.FSM
	// Logger is the root logger; Registerer receives this server's metrics.
	Logger     hclog.Logger
	Registerer prometheus.Registerer
}

// Raft log stores (Config.LogStore).
const (
	LogStoreSegment = "segment"
	LogStoreBolt    = "boltdb"
)

// RaftTimings are the Raft failure-detection timings.
type RaftTimings struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
}

// DefaultConfig returns a Config with production defaults; the caller fills
// in node, region, directories and addresses.
func DefaultConfig() *Config {
	return &Config{
		RaftBindAddr:           "127.0.0.1:8300",
		SerfBindAddr:           "127.0.0.1:8301",
		RaftMultiplier:         1,
		MaxAppendEntries:       512,
		SnapshotThreshold:      8192,
		SnapshotInterval:       120 * time.Second,
		TrailingLogs:           10240,
		LogStore:               LogStoreSegment,
		DeadServerCleanupAfter: 30 * time.Second,
		ReconcileInterval:      60 * time.Second,
	}
}

// Validate reports the first problem with c, in words an operator can act on.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("node name is required (--node)")
	case !fsm.ValidRegionName(c.NodeID):
		return fmt.Errorf("node name %q must be a DNS label: lower-case letters, digits and '-'", c.NodeID)
	case c.Region == "":
		return errors.New("region is required (--region)")
	case !fsm.ValidRegionName(c.Region):
		return fmt.Errorf("region %q must be a DNS label", c.Region)
	case c.DataDir == "":
		return errors.New("data directory is required (--data-dir)")
	case c.BootstrapExpect < 0:
		return errors.New("--bootstrap-expect cannot be negative")
	case c.NonVoter && c.BootstrapExpect > 0:
		return errors.New("a non-voter cannot bootstrap a cluster: drop --bootstrap-expect or --non-voter")
	case c.RaftMultiplier < 1 || c.RaftMultiplier > 10:
		return fmt.Errorf("--raft-multiplier %d must be between 1 and 10", c.RaftMultiplier)
	case c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024:
		return fmt.Errorf("max append entries %d must be between 1 and 1024", c.MaxAppendEntries)
	case c.LogStore != "" && c.LogStore != LogStoreSegment && c.LogStore != LogStoreBolt:
		return fmt.Errorf("raft log store %q must be %q or %q", c.LogStore, LogStoreSegment, LogStoreBolt)
	case c.FailoverDetect < 0:
		return fmt.Errorf("failover detection window %s must not be negative", c.FailoverDetect)
	case c.DeadServerCleanupAfter < 0:
		return errors.New("dead server cleanup time cannot be negative")
	}
	for _, a := range []struct{ name, addr string }{{"--raft-addr", c.RaftBindAddr}, {"--serf-addr", c.SerfBindAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q must be host:port: %v", a.name, a.addr, err)
		}
	}
	return nil
}

// timings returns the effective Raft timings.
func (c *Config) timings() RaftTimings {
	if c.RaftTimings != nil {
		return *c.RaftTimings
	}
	m := time.Duration(c.RaftMultiplier)
	if m < 1 {
		m = 1
	}
	return RaftTimings{
		HeartbeatTimeout:   BaseHeartbeatTimeout * m,
		ElectionTimeout:    BaseElectionTimeout * m,
		LeaderLeaseTimeout: BaseLeaderLeaseTimeout * m,
		CommitTimeout:      50 * time.Millisecond,
	}
}
