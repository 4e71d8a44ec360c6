package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// auditLogSource is what GET /v1/status/audit?commands=true needs to serve
// the log entries behind the chain; cluster.Server has it. A Cluster
// without it answers the chain without them.
type auditLogSource interface {
	LogStore() raft.LogStore
}

// operatorOnlyCommands are the commands whose bodies only an operator may
// read from the log: the other roles cannot list tokens, so they must not
// read accessors, roles and secret hashes from the log either.
var operatorOnlyCommands = map[fsm.MessageType]bool{fsm.TokenCreateType: true, fsm.TokenDeleteType: true}

// statusAudit answers the audit chain's head and recent entries;
// ?recent=N keeps the last N (1-256), ?commands=true adds the log entries
// a client needs to recompute each link (wire.AuditStatus.Log).
func (a *API) statusAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	keep := 0
	if raw := q.Get("recent"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 256 {
			writeError(w, badRequest("invalid_recent", fmt.Sprintf("recent %q must be a whole number from 1 to 256", raw)))
			return
		}
		keep = n
	}
	withLog := false
	if raw := q.Get("commands"); raw != "" {
		b, err := strconv.ParseBool(raw)
		if err != nil {
			writeError(w, badRequest("invalid_commands", fmt.Sprintf("commands %q must be true or false", raw)))
			return
		}
		withLog = b
	}
	operator := identityOf(r).Role == fsm.RoleOperator
	a.read(w, r, func(s *view) (any, uint64, error) {
		recent := s.RecentAudit()
		if keep > 0 && keep < len(recent) {
			recent = recent[len(recent)-keep:]
		}
		st := wire.AuditStatus{Head: s.AuditHead, Index: s.Index, Recent: append([]fsm.AuditEntry(nil), recent...)}
		if !withLog {
			return st, s.Index, nil
		}
		return &auditWithLog{st: st, src: a.c, operator: operator}, s.Index, nil
	})
}

// auditWithLog reads the log entries when it is encoded: after the FSM's
// read lock is released, so that reading up to 256 entries from the log
// store never holds applies back.
type auditWithLog struct {
	st       wire.AuditStatus
	src      any
	operator bool
}

func (x *auditWithLog) MarshalJSON() ([]byte, error) {
	x.st.Log = auditLog(x.src, x.st.Recent, x.operator)
	return json.Marshal(x.st)
}

// auditLog returns the log entry of every index of recent, once.
func auditLog(src any, recent []fsm.AuditEntry, operator bool) []wire.AuditLogEntry {
	logs, _ := src.(auditLogSource)
	out := []wire.AuditLogEntry{}
	seen := map[uint64]bool{}
	for _, e := range recent {
		if seen[e.Index] {
			continue
		}
		seen[e.Index] = true
		le := wire.AuditLogEntry{Index: e.Index}
		var l raft.Log
		switch {
		case e.Type == fsm.SnapshotRestoreType.String():
			le.Unavailable = "a snapshot restore: its link covers the restore's record (the entry's note), not a log entry"
		case logs == nil:
			le.Unavailable = "this server does not serve its log"
		case logs.LogStore().GetLog(e.Index, &l) != nil || l.Type != raft.LogCommand:
			le.Unavailable = "no longer in the log (compacted after a snapshot)"
		default:
			le.Commands = auditCommands(l.Data, operator)
		}
		out = append(out, le)
	}
	return out
}

// auditCommands splits a log entry's data into the commands the chain may
// have hashed: a batch's commands, then the entry itself (a single
// command, or a batch refused whole).
func auditCommands(data []byte, operator bool) []wire.AuditCommand {
	one := func(c []byte) wire.AuditCommand {
		var ac wire.AuditCommand
		if len(c) > 0 {
			ac.Type = c[0]
		}
		if !operator && operatorOnlyCommands[fsm.MessageType(ac.Type)] {
			ac.Withheld = true
			return ac
		}
		if len(c) > 1 {
			ac.Body = c[1:]
		}
		return ac
	}
	var out []wire.AuditCommand
	if cmds, err := fsm.BatchCommands(data); err == nil {
		for _, c := range cmds {
			out = append(out, one(c))
		}
	}
	return append(out, one(data))
}
