package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/hashicorp/serf/serf"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/node"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// Sentinel errors, re-exported from structs so callers of this package need
// not import it.
var (
	ErrNotLeader = structs.ErrNotLeader
	// ErrUpgradeInProgress: a server speaks a protocol too old for the
	// command (see commandProtocol).
	ErrUpgradeInProgress = structs.ErrUpgradeInProgress
	ErrNoLeader          = structs.ErrNoLeader
	ErrOutcomeUnknown    = structs.ErrOutcomeUnknown
	ErrBusy              = structs.ErrBusy
	ErrShuttingDown      = structs.ErrShuttingDown
	ErrFollowerBehind    = structs.ErrFollowerBehind

	ErrForwardUnsupported = structs.ErrForwardUnsupported
)

// Server is one atomfed server: a Raft voter or non-voter plus its Serf
// member.
type Server struct {
	cfg    *Config
	logger hclog.Logger

	fsm       *fsm.FSM
	raft      *raft.Raft
	transport *raft.NetworkTransport
	stream    *streamLayer
	store     *raftboltdb.BoltStore // stable store (term, vote); the log too with LogStoreBolt
	logs      logStore
	logSync   prometheus.Histogram // fdatasync time of log appends
	snapshots raft.SnapshotStore

	serf        *serf.Serf
	serfEventCh chan serf.Event

	raftNotifyCh chan bool
	reconcileCh  chan memberEvent
	leaderCh     *broadcast // closed and renewed on every leader change

	leaderMu       sync.Mutex
	routines       []leaderRoutine
	routinesCancel context.CancelFunc
	routinesWG     sync.WaitGroup
	readyForReads  atomic.Bool
	leaderHTTP     atomic.Pointer[map[string]string] // server id -> http URL
	failedSince    map[string]time.Time              // leader-only, guarded by leaderMu
	refused        refusals                          // members the leader would not admit
	fwdAuth        atomic.Pointer[ForwardAuthorizer] // checks forwarded callers (leader)
	readBarrier    *readBarrier
	followerReads  *readBarrier // a follower's read-index requests, shared
	fwd            *fwdClient   // a follower's connections to the leader
	proto          protocolCache
	restoreMu      sync.Mutex // one snapshot restore at a time (snapshot.go)
	// applyGate holds new writes back while a snapshot restore reads the
	// live state and installs the state it built from it (snapshot.go):
	// nothing may be applied in between and lost.
	applyGate      sync.RWMutex
	batch          *batcher
	bootstrapped   atomic.Bool
	shutdownCtx    context.Context
	shutdownCancel context.CancelFunc
	shutdownOnce   sync.Once
	wg             sync.WaitGroup
	metrics        *metrics
	leaderChanges  atomic.Uint64
	observer       *raft.Observer
	observationCh  chan raft.Observation
	established    atomic.Uint64 // term in which leadership was established
}

// New starts a server: it opens the stores, starts Raft and Serf, joins the
// given Serf addresses in the background and bootstraps when
// BootstrapExpect servers are visible.
func New(cfg *Config, routines ...LeaderRoutine) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := node.ClaimDataDir(cfg.DataDir, cfg.NodeID); err != nil {
		return nil, err
	}
	f := cfg.FSM
	if f == nil {
		f = fsm.New(logger, cfg.Registerer)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:            cfg,
		logger:         logger.Named("server"),
		fsm:            f,
		raftNotifyCh:   make(chan bool, 16),
		reconcileCh:    make(chan memberEvent, 1024),
		serfEventCh:    make(chan serf.Event, 1024),
		leaderCh:       newBroadcast(),
		failedSince:    map[string]time.Time{},
		shutdownCtx:    ctx,
		shutdownCancel: cancel,
		observationCh:  make(chan raft.Observation, 64),
		logSync:        newLogSyncHistogram(),
	}
	empty := map[string]string{}
	s.leaderHTTP.Store(&empty)
	s.readBarrier = newReadBarrier(func() (uint64, error) { return 0, s.verifyLeader() })
	s.fwd = &fwdClient{s: s}
	s.batch = &batcher{s: s}
	s.followerReads = newReadBarrier(func() (uint64, error) {
		ctx, cancel := context.WithTimeout(s.shutdownCtx, 10*time.Second)
		defer cancel()
		return s.fetchReadIndex(ctx)
	})
	s.routines = append(s.routines,
		leaderRoutine{name: "reconcile", fn: s.reconcileRoutine},
		leaderRoutine{name: "dead-server-cleanup", fn: s.deadServerCleanupRoutine},
		leaderRoutine{name: "scheduler", fn: s.schedulerRoutine},
		leaderRoutine{name: "sync-audit", fn: s.syncAuditRoutine},
		leaderRoutine{name: "switchover", fn: s.switchoverRoutine},
		leaderRoutine{name: "divergence", fn: s.divergenceRoutine},
		leaderRoutine{name: "failover", fn: s.failoverRoutine},
		leaderRoutine{name: "server-keys", fn: s.serverKeysRoutine},
		leaderRoutine{name: "approval-expiry", fn: s.approvalExpiryRoutine},
		leaderRoutine{name: "backups", fn: s.backupRoutine},
		leaderRoutine{name: "rebuilds", fn: s.rebuildRoutine},
	)
	for _, r := range routines {
		s.routines = append(s.routines, leaderRoutine{name: r.Name, fn: r.Run})
	}
	if err := s.setupRaft(); err != nil {
		s.closeStores()
		cancel()
		return nil, err
	}
	if err := s.setupSerf(); err != nil {
		s.raft.Shutdown().Error()
		s.closeStores()
		cancel()
		return nil, err
	}
	s.metrics = newMetrics(s, cfg.Registerer)
	s.observer = raft.NewObserver(s.observationCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(s.observer)

	s.goFn(s.monitorLeadership)
	s.goFn(s.serfEventLoop)
	s.goFn(s.observeLeaders)
	if len(cfg.Join) > 0 {
		s.goFn(s.retryJoin)
	}
	s.logger.Info("server started", "region", cfg.Region, "raft", s.stream.Addr().String(),
		"serf", s.SerfAddr(), "bootstrap_expect", cfg.BootstrapExpect, "non_voter", cfg.NonVoter)
	return s, nil
}

func (s *Server) goFn(fn func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn(s.shutdownCtx)
	}()
}

// setupRaft opens the stores (bolt for term and vote, the log store,
// snapshots) and the transport and starts Raft.
func (s *Server) setupRaft() error {
	dir := filepath.Join(s.cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create raft dir: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: boltOptions()})
	if errors.Is(err, bbolt.ErrTimeout) {
		return fmt.Errorf("open raft store %s: it is locked by another process (is another atomfed server using this data dir?)", filepath.Join(dir, "raft.db"))
	}
	if err != nil {
		return fmt.Errorf("open raft store: %w", err)
	}
	s.store = store
	ls, err := s.openLogStore(dir, store)
	if err != nil {
		return err
	}
	s.logs = ls
	logs, err := raft.NewLogCache(512, ls)
	if err != nil {
		return fmt.Errorf("raft log cache: %w", err)
	}
	rlog := s.cfg.Logger
	if rlog == nil {
		rlog = hclog.NewNullLogger()
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 3, rlog.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	s.snapshots = snaps
	stream, err := newStreamLayer(s.cfg.RaftBindAddr, s.cfg.RaftAdvertiseAddr, s.cfg.Dial)
	if err != nil {
		return err
	}
	if t := s.cfg.TLS; t != nil {
		// Only servers may open Raft or forwarding connections: a
		// certificate of the same CA that does not name a server (an
		// agent's) is refused in the handshake.
		stream.tls = &TLSConfig{Server: tlsutil.ServerOnly(t.Server), Client: t.Client}
	}
	stream.fwd = s.serveForward
	s.stream = stream
	s.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 8,
		// 1 turns off pipelined replication. raft's pipeline deadlocks when
		// a follower rejects an AppendEntries while another send is queued
		// (hashicorp/raft#612): that follower never gets another entry and
		// raft.Shutdown hangs for ever. Pipelining buys little with batching
		// (hashicorp/raft#541).
		MaxRPCsInFlight: 1,
		Timeout:         10 * time.Second,
		Logger:          rlog.Named("transport"),
	})

	t := s.cfg.timings()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.Logger = rlog.Named("raft")
	rc.HeartbeatTimeout = t.HeartbeatTimeout
	rc.ElectionTimeout = t.ElectionTimeout
	rc.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	rc.CommitTimeout = t.CommitTimeout
	rc.MaxAppendEntries = s.cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.SnapshotInterval = s.cfg.SnapshotInterval
	rc.TrailingLogs = s.cfg.TrailingLogs
	rc.NotifyCh = s.raftNotifyCh
	rc.NoLegacyTelemetry = true
	rc.ShutdownOnRemove = false
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft config: %w", err)
	}
	has, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	s.bootstrapped.Store(has)
	r, err := raft.NewRaft(rc, s.fsm, logs, store, snaps, mainLoopTransport{s.transport})
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	s.raft = r
	return nil
}

func (s *Server) closeStores() {
	if s.transport != nil {
		s.transport.Close()
	} else if s.stream != nil {
		s.stream.Close()
	}
	if s.stream != nil && !s.stream.drain(5*time.Second) {
		s.logger.Warn("raft transport handlers still running after 5s; closing the stores anyway")
	}
	if s.logs != nil && s.logs != logStore(s.store) {
		s.logs.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
}

// LogStore returns the raft log store, for inspection (tests, debugging).
func (s *Server) LogStore() raft.LogStore { return s.logs }

// FSM returns the server's state machine.
func (s *Server) FSM() *fsm.FSM { return s.fsm }

// NodeID returns the server's node name.
func (s *Server) NodeID() string { return s.cfg.NodeID }

// Region returns the server's region.
func (s *Server) Region() string { return s.cfg.Region }

// RaftAddr returns the advertised Raft address.
func (s *Server) RaftAddr() string { return s.stream.Addr().String() }

// Raft exposes the underlying Raft instance for operator endpoints and tests.
func (s *Server) Raft() *raft.Raft { return s.raft }

// Leave gracefully leaves the cluster: a leader first hands leadership to
// another voter, then the server leaves Serf so the leader removes it from
// the Raft configuration, and finally shuts down.
func (s *Server) Leave(ctx context.Context) error {
	s.logger.Info("leaving the cluster")
	s.handOffLeadership()
	if err := s.serf.Leave(); err != nil {
		s.logger.Warn("serf leave failed", "error", err)
	}
	s.waitRemoved(ctx)
	return s.Shutdown()
}

// handOffLeadership makes a leader that is leaving give leadership away: by
// a transfer, or, when that fails (no other voter caught up), by removing
// itself from the configuration, after which raft steps it down.
func (s *Server) handOffLeadership() {
	if s.raft.State() != raft.Leader || s.otherVoters() == 0 {
		return
	}
	err := s.raft.LeadershipTransfer().Error()
	if err == nil {
		s.logger.Info("leadership transferred")
		return
	}
	s.logger.Warn("leadership transfer failed; removing this server from the configuration instead", "error", err)
	if err := s.raft.RemoveServer(raft.ServerID(s.cfg.NodeID), 0, configChangeTimeout).Error(); err != nil {
		s.logger.Warn("self-removal failed; leaving anyway", "error", err)
	}
}

// waitRemoved waits, bounded by ctx, until the leader has removed this server
// from the Raft configuration, so that leaving never costs the others their
// quorum by surprise.
func (s *Server) waitRemoved(ctx context.Context) {
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if !s.inConfiguration() || s.otherVoters() == 0 {
			return
		}
		// A follower can win an election while it leaves: it must not stay
		// leader, since a leader never removes itself on a Serf leave.
		s.handOffLeadership()
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			s.logger.Warn("leader did not remove this server within 5s; shutting down anyway")
			return
		case <-tick.C:
		}
	}
}

func (s *Server) inConfiguration() bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID == raft.ServerID(s.cfg.NodeID) {
			return true
		}
	}
	return false
}

func (s *Server) otherVoters() int {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, srv := range f.Configuration().Servers {
		if srv.ID != raft.ServerID(s.cfg.NodeID) && srv.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

// Shutdown stops the server without leaving: peers see it as failed.
func (s *Server) Shutdown() error {
	var err error
	s.shutdownOnce.Do(func() {
		s.logger.Info("shutting down")
		s.shutdownCancel()
		s.fwd.closeAll()
		if s.serf != nil {
			if e := s.serf.Shutdown(); e != nil {
				err = errors.Join(err, fmt.Errorf("serf shutdown: %w", e))
			}
		}
		if e := s.raft.Shutdown().Error(); e != nil {
			err = errors.Join(err, fmt.Errorf("raft shutdown: %w", e))
		}
		s.raft.DeregisterObserver(s.observer)
		s.wg.Wait()
		s.closeStores()
		if s.metrics != nil {
			s.metrics.unregister()
		}
	})
	return err
}

// boltOptions are the settings of raft.db, the stable store (and the log
// store with LogStoreBolt). Every commit is still fsynced; what changes is
// how much each commit writes. Without
// NoFreelistSync bolt rewrites its free-page list on every commit, which
// for a raft log that is appended to and truncated from the front is most
// of the bytes written; with it the list is rebuilt by scanning the file
// when the store opens (the log is compacted after each snapshot, so the
// file stays small). The map freelist makes allocation O(1) instead of a
// scan of a sorted array. Consul offers the same as raft_boltdb
// NoFreelistSync.
func boltOptions() *bbolt.Options {
	return &bbolt.Options{
		Timeout:        2 * time.Second,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	}
}
