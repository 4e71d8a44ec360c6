package cluster

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/raftlog"
)

// metrics are a server's raft and serf metrics. Raft's own go-metrics are
// process-global, so the gauges here are read from the server at scrape
// time instead: several in-process servers each keep their own registry.
type metrics struct {
	reg        prometheus.Registerer
	applyTotal *prometheus.CounterVec
	applyTime  prometheus.Histogram
	batchSize  prometheus.Histogram
	logSync    prometheus.Histogram
	plans      *prometheus.CounterVec
	// forwardRefused counts forwarded commands the leader would not log.
	forwardRefused prometheus.Counter
	// membersRefused counts Serf members the leader would not admit.
	membersRefused *prometheus.CounterVec
	collector      *collector
	repl           *replicationCollector
	switchovers    *switchoverCollector
	failovers      *failoverCollector
	backups        *backupCollector
}

func newMetrics(s *Server, reg prometheus.Registerer) *metrics {
	m := &metrics{
		reg: reg,
		applyTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_raft_apply_total",
			Help: "Commands submitted to raft on this server, by outcome (ok, not_leader, busy, unknown).",
		}, []string{"outcome"}),
		applyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "atomfed_raft_apply_duration_seconds",
			Help:    "Time from raft.Apply to the FSM result on the leader (includes fsync and quorum round trip).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "atomfed_raft_batch_commands",
			Help:    "Commands per raft entry the leader's group commit sent (1: a command on its own).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		logSync: s.logSync,
		plans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_scheduler_tasks_total",
			Help: "Task changes in plans the scheduler applied, by kind (created, assigned, deleted).",
		}, []string{"kind"}),
		forwardRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "atomfed_forward_refused_total",
			Help: "Commands a follower forwarded that the leader refused to log: they do not decode as a command it applies, or their caller may not make them.",
		}),
		membersRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_serf_members_refused_total",
			Help: "Serf members the leader refused to admit as a voter or an agent, once per member and reason (server_identity, agent_unbound).",
		}, []string{"reason"}),
		collector: &collector{s: s},
		repl:      &replicationCollector{f: s.fsm},

		switchovers: &switchoverCollector{f: s.fsm},
		failovers:   &failoverCollector{f: s.fsm, now: time.Now, detectMS: s.failoverDetectMS()},
		backups:     &backupCollector{f: s.fsm, now: time.Now},
	}
	if reg != nil {
		reg.MustRegister(m.applyTotal, m.applyTime, m.batchSize, m.logSync, m.plans, m.forwardRefused, m.membersRefused, m.collector, m.repl, m.switchovers, m.backups, m.failovers)
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	m.reg.Unregister(m.applyTotal)
	m.reg.Unregister(m.applyTime)
	m.reg.Unregister(m.batchSize)
	m.reg.Unregister(m.logSync)
	m.reg.Unregister(m.plans)
	m.reg.Unregister(m.forwardRefused)
	m.reg.Unregister(m.membersRefused)
	m.reg.Unregister(m.collector)
	m.reg.Unregister(m.repl)
	m.reg.Unregister(m.switchovers)
	m.reg.Unregister(m.backups)
}

func (m *metrics) observePlan(p *fsm.TaskPlan) {
	m.plans.WithLabelValues("created").Add(float64(len(p.Create)))
	m.plans.WithLabelValues("assigned").Add(float64(len(p.Assign)))
	m.plans.WithLabelValues("deleted").Add(float64(len(p.Delete)))
}

// newLogSyncHistogram is made before raft starts (the log store observes
// into it from raft's goroutines) and registered with the other metrics.
func newLogSyncHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "atomfed_raft_log_fsync_duration_seconds",
		Help:    "Time of the fdatasync of each raft log append (segment log store); every write waits for one on the leader and one on a follower.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
	})
}

func (m *metrics) observeBatch(n int) {
	if m != nil {
		m.batchSize.Observe(float64(n))
	}
}

func (m *metrics) observeApply(start time.Time, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	switch {
	case err == nil:
		m.applyTime.Observe(time.Since(start).Seconds())
	case errors.Is(classifyApplyError(err), ErrNotLeader):
		outcome = "not_leader"
	case errors.Is(classifyApplyError(err), ErrBusy):
		outcome = "busy"
	default:
		outcome = "unknown"
	}
	m.applyTotal.WithLabelValues(outcome).Inc()
}

var (
	descState       = prometheus.NewDesc("atomfed_raft_state", "Raft state of this server: 1 for the current state label.", []string{"state"}, nil)
	descTerm        = prometheus.NewDesc("atomfed_raft_term", "Current raft term.", nil, nil)
	descLastIndex   = prometheus.NewDesc("atomfed_raft_last_index", "Last raft log index.", nil, nil)
	descCommitIndex = prometheus.NewDesc("atomfed_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied     = prometheus.NewDesc("atomfed_raft_applied_index", "Last raft index applied to the FSM.", nil, nil)
	descLastContact = prometheus.NewDesc("atomfed_raft_last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader).", nil, nil)
	descPeers       = prometheus.NewDesc("atomfed_raft_peers", "Servers in the raft configuration, by suffrage.", []string{"suffrage"}, nil)
	descLeaderChg   = prometheus.NewDesc("atomfed_raft_leader_changes_total", "Leader changes observed by this server.", nil, nil)
	descIsLeader    = prometheus.NewDesc("atomfed_raft_is_leader", "1 if this server is the leader and has established leadership.", nil, nil)
	descFSMIndex    = prometheus.NewDesc("atomfed_fsm_index", "Raft index of the last command that changed the state.", nil, nil)
	descMembers     = prometheus.NewDesc("atomfed_serf_members", "Serf members known to this node, by status.", []string{"status"}, nil)
	descHealth      = prometheus.NewDesc("atomfed_serf_health_score", "Memberlist health (awareness) score; 0 is healthy, higher means this node is slow to answer probes.", nil, nil)
	descLogFailed   = prometheus.NewDesc("atomfed_raft_log_failed", "1 when the raft log store refuses appends after a failed fdatasync: restart the server.", nil, nil)
	descLogSegments = prometheus.NewDesc("atomfed_raft_log_segments", "Segment files of the raft log.", nil, nil)
	descLogBytes    = prometheus.NewDesc("atomfed_raft_log_bytes", "Bytes of records in the raft log's segment files.", nil, nil)
)

type collector struct{ s *Server }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descTerm, descLastIndex, descCommitIndex, descApplied,
		descLastContact, descPeers, descLeaderChg, descIsLeader, descFSMIndex, descMembers, descHealth,
		descLogFailed, descLogSegments, descLogBytes} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.s.raft
	state := r.State()
	for _, st := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if st == state {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, st.String())
	}
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(r.CurrentTerm()))
	ch <- prometheus.MustNewConstMetric(descLastIndex, prometheus.GaugeValue, float64(r.LastIndex()))
	ch <- prometheus.MustNewConstMetric(descCommitIndex, prometheus.GaugeValue, float64(r.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(r.AppliedIndex()))
	contact := 0.0
	if state != raft.Leader {
		if lc := r.LastContact(); !lc.IsZero() {
			contact = time.Since(lc).Seconds()
		}
	}
	ch <- prometheus.MustNewConstMetric(descLastContact, prometheus.GaugeValue, contact)
	voters, nonvoters := 0.0, 0.0
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				voters++
			} else {
				nonvoters++
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, voters, "voter")
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, nonvoters, "nonvoter")
	ch <- prometheus.MustNewConstMetric(descLeaderChg, prometheus.CounterValue, float64(c.s.leaderChanges.Load()))
	isLeader := 0.0
	if c.s.IsLeader() {
		isLeader = 1
	}
	ch <- prometheus.MustNewConstMetric(descIsLeader, prometheus.GaugeValue, isLeader)
	ch <- prometheus.MustNewConstMetric(descFSMIndex, prometheus.GaugeValue, float64(c.s.fsm.Index()))
	counts := map[string]float64{"alive": 0, "leaving": 0, "left": 0, "failed": 0}
	for _, m := range c.s.serf.Members() {
		counts[m.Status.String()]++
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, n, st)
	}
	ch <- prometheus.MustNewConstMetric(descHealth, prometheus.GaugeValue, float64(c.s.serf.Memberlist().GetHealthScore()))
	if st, ok := c.s.logs.(*raftlog.Store); ok {
		failed := 0.0
		if st.Failed() != nil {
			failed = 1
		}
		n, b := st.Segments()
		ch <- prometheus.MustNewConstMetric(descLogFailed, prometheus.GaugeValue, failed)
		ch <- prometheus.MustNewConstMetric(descLogSegments, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(descLogBytes, prometheus.GaugeValue, float64(b))
	}
}
