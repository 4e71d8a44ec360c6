package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	aggr "github.com/atomcloud/atomfed/internal/metrics"
	"github.com/atomcloud/atomfed/internal/structs"
)

// health answers GET /health from local state only: it must work with no
// leader, so that operators can see why. It needs no token and shows no
// infrastructure detail (check targets, addresses, paths) without one; a
// token of any role sees it all, and a bad token gets the anonymous view
// rather than a 401, so that a probe holding a revoked token still learns
// that the node is up. With ?ready (a readiness probe's URL) the answer
// is 503, same body, while the server knows no leader, so that an
// orchestrator sends it no traffic and moves a rolling update on only once
// the restarted server is back in the cluster.
func (a *API) health(w http.ResponseWriter, r *http.Request) {
	leader, _ := a.c.Leader()
	head, auditIdx := a.c.FSM().AuditHead()
	stats := a.c.Stats()
	applied, _ := strconv.ParseUint(stats["applied_index"], 10, 64)
	term, _ := strconv.ParseUint(stats["term"], 10, 64)
	commit, _ := strconv.ParseUint(stats["commit_index"], 10, 64)
	h := structs.Health{
		Status:      "ok",
		Node:        a.c.NodeID(),
		Region:      a.c.Region(),
		Role:        "server",
		RaftState:   a.c.State(),
		Leader:      leader,
		KnownLeader: leader != "",
		Index:       a.c.FSM().Index(),
		AppliedIdx:  applied,
		Term:        term,
		CommitIndex: commit,
		AuditHead:   head,
		AuditIndex:  auditIdx,
		Version:     a.cfg.Version,
		// Anonymous callers see which checks failed, not what they
		// checked (addresses, paths): a token of any role sees it all.
		Simulation: a.cfg.Simulation.Summary(),
	}
	if r.Header.Get("Authorization") != "" {
		if _, err := a.authn(r); err == nil {
			h.Simulation = a.cfg.Simulation
		}
	}
	h.SimulationMode = a.cfg.Simulation.Active()
	code := http.StatusOK
	if leader == "" {
		h.Status = "no_leader"
		if r.URL.Query().Has("ready") {
			code = http.StatusServiceUnavailable
		}
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(h.Index, 10))
	writeJSON(w, code, h)
}

func (a *API) statusLeader(w http.ResponseWriter, r *http.Request) {
	id, addr := a.c.Leader()
	if id == "" {
		writeError(w, structs.ErrNoLeader)
		return
	}
	info := structs.LeaderInfo{ID: id, Address: addr}
	info.HTTP, _ = a.c.LeaderHTTP()
	writeJSON(w, http.StatusOK, info)
}

func (a *API) statusPeers(w http.ResponseWriter, r *http.Request) {
	peers, idx, err := a.c.Configuration()
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
	writeJSON(w, http.StatusOK, peers)
}

func (a *API) members(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.c.Members())
}

// raftConfiguration is answered by the leader unless ?consistency=stale.
func (a *API) raftConfiguration(w http.ResponseWriter, r *http.Request) {
	opts, err := parseQuery(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if opts.consistency != Stale && !a.c.IsLeader() {
		a.forward(w, r, nil, false)
		return
	}
	peers, idx, err := a.c.Configuration()
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
	writeJSON(w, http.StatusOK, wire.RaftConfiguration{Servers: peers, Index: idx})
}

func (a *API) removePeer(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	if id == "" {
		writeError(w, badRequest("missing_id", "give the server to remove as ?id=<node>"))
		return
	}
	if !a.c.IsLeader() {
		a.forward(w, r, nil, true)
		return
	}
	if err := a.c.RemovePeer(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.DeleteResponse{Deleted: "raft_peer", Name: id})
}

// snapshotSave streams a snapshot archive taken on the leader (or, with
// ?consistency=stale, on this server).
// snapshotDeadline is how long a snapshot save or restore may take to
// transfer, past the server's read and write timeouts.
const snapshotDeadline = 30 * time.Minute

// extendDeadlines moves this request's read and write deadlines d ahead.
func extendDeadlines(w http.ResponseWriter, d time.Duration) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(d))
	_ = rc.SetWriteDeadline(time.Now().Add(d))
}

func (a *API) snapshotSave(w http.ResponseWriter, r *http.Request) {
	extendDeadlines(w, snapshotDeadline)
	opts, err := parseQuery(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if opts.consistency != Stale && !a.c.IsLeader() {
		a.forward(w, r, nil, false)
		return
	}
	var buf bytes.Buffer
	meta, err := a.c.SaveSnapshot(&buf)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="atomfed-`+strconv.FormatUint(meta.Index, 10)+`.snap"`)
	w.Header().Set(HeaderIndex, strconv.FormatUint(meta.Index, 10))
	w.Header().Set("X-Atomfed-Audit-Head", meta.AuditHead)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// snapshotRestore verifies an uploaded archive and restores it on the
// leader; every server ends up with its state.
func (a *API) snapshotRestore(w http.ResponseWriter, r *http.Request) {
	extendDeadlines(w, snapshotDeadline)
	body, err := readBody(w, r, structs.MaxSnapshotSize)
	if err != nil {
		writeError(w, err)
		return
	}
	if !a.c.IsLeader() {
		a.forward(w, r, body, true)
		return
	}
	meta, err := a.c.RestoreSnapshot(bytes.NewReader(body), identityOf(r).Accessor)
	if errors.Is(err, structs.ErrRestoreNeedsApproval) {
		a.requestRestore(w, r, meta, "")
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, meta)
}

// requestRestore answers a restore the approvers have not approved yet:
// 202 with the pending approval bound to the snapshot's digest (the one
// already pending for it, or a new one). Once it is applied, the same
// upload restores the snapshot.
func (a *API) requestRestore(w http.ResponseWriter, r *http.Request, meta *structs.ArchiveMeta, from string) {
	cmd := fsm.SnapshotRestore{Digest: meta.Digest, AuditHead: meta.AuditHead, Index: meta.Index, At: a.stamp()}
	var pending *fsm.Approval
	a.c.FSM().Read(func(s *fsm.State) {
		for _, ap := range s.SortedApprovals() {
			var c fsm.SnapshotRestore
			if ap.Status == fsm.ApprovalPending && ap.Action == fsm.ActionRestoreSnapshot &&
				json.Unmarshal(ap.Command, &c) == nil && c.Digest == meta.Digest {
				pending = ap
			}
		}
	})
	if pending != nil {
		writeJSON(w, http.StatusAccepted, pending)
		return
	}
	data, err := fsm.EncodeJSON(fsm.SnapshotRestoreType, cmd)
	if err != nil {
		writeError(w, err)
		return
	}
	ac := fsm.ApprovalCreate{ID: "appr-" + randomHex(8), Action: fsm.ActionRestoreSnapshot, CommandType: uint8(fsm.SnapshotRestoreType),
		Command: data[2:], RequestedBy: identityOf(r).Accessor, At: cmd.At,
		Summary: fmt.Sprintf("restore snapshot %s taken by %s at state index %d (audit head %s)%s", meta.Digest, meta.Node, meta.Index, meta.AuditHead, from)}
	a.write(w, r, nil, fsm.ApprovalCreateType, ac, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusAccepted, res.Value)
	})
}

func (a *API) globalStatus(w http.ResponseWriter, r *http.Request) {
	peers, _, _ := a.c.Configuration()
	leader, _ := a.c.Leader()
	a.read(w, r, func(s *view) (any, uint64, error) {
		var names []string
		for _, reg := range s.SortedRegions() {
			names = append(names, reg.Name)
		}
		sums := aggr.Summaries(names, a.metricsStore.Snapshots(names), a.now(), defaultMetricsMaxAge)
		for i := range sums {
			h := s.BackupHealthOf(sums[i].Region, a.now().UnixNano())
			if h.LastVerified != nil {
				age := float64(h.AgeSeconds)
				sums[i].BackupAgeSeconds = &age
			}
			// A region whose database is simulated takes no backups:
			// nothing of it is stale.
			if h.Stale && !h.Simulated {
				sums[i].Stale = append(sums[i].Stale, aggr.ValueBackupAge)
				sort.Strings(sums[i].Stale)
			}
		}
		return wire.GlobalStatus{
			Metrics: sums,
			Node:    a.c.NodeID(), Region: a.c.Region(), Leader: leader, Servers: peers,
			Regions: regionViews(s.State), Agents: len(s.Agents), Tasks: len(s.Tasks), Tenants: len(s.Tenants), Index: s.Index, AuditHead: s.AuditHead,
			Replication:           s.ReplicationSummary(),
			ControlPlaneSnapshots: func() *fsm.SnapshotShipHealth { h := s.SnapshotShipHealthAt(a.now().UnixNano()); return &h }(),
			SimulationMode:        a.cfg.Simulation.Active(), Simulation: a.cfg.Simulation,
		}, s.Index, nil
	})
}
