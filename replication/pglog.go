package replication

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// logTail follows the mirror's PostgreSQL log (jsonlog) for the errors of
// one subscription's workers. PostgreSQL 15 counts apply and sync errors
// (pg_stat_subscription_stats) but keeps their text only in the server
// log; reading it through pg_read_binary_file is how an error such as a
// unique violation reaches the API instead of staying in a log file. It
// needs log_destination to include jsonlog (with logging_collector) and a
// role that may read server files; without them the executor reports the
// counters alone.
type logTail struct {
	sub      string
	file     string
	offset   int64
	disabled string // why the tail is off, once it is
	pids     map[int]bool
	origin   string // "pg_<subscription oid>", the replication origin
	last     *fsm.ReplicationIssue
}

const (
	logInitialWindow = 256 << 10
	logReadMax       = 1 << 20
)

var (
	startedRe = regexp.MustCompile(`(?:apply worker|table synchronization worker) for subscription "([^"]+)"`)
)

type logLine struct {
	Timestamp string `json:"timestamp"`
	PID       int    `json:"pid"`
	Severity  string `json:"error_severity"`
	State     string `json:"state_code"`
	Message   string `json:"message"`
	Detail    string `json:"detail"`
	Context   string `json:"context"`
	Backend   string `json:"backend_type"`
}

func newLogTail(sub string) *logTail { return &logTail{sub: sub, pids: map[int]bool{}} }

// poll reads what the log gained since the last call and returns the last
// error of the subscription's workers seen so far.
func (l *logTail) poll(ctx context.Context, conn *pgx.Conn, subOID uint32, workerPID int) *fsm.ReplicationIssue {
	if l.disabled != "" {
		return l.last
	}
	l.origin = "pg_" + strconv.FormatUint(uint64(subOID), 10)
	if workerPID != 0 {
		l.pids[workerPID] = true
	}
	var file *string
	if err := conn.QueryRow(ctx, `SELECT pg_current_logfile('jsonlog')`).Scan(&file); err != nil || file == nil {
		l.disabled = "no jsonlog server log (set log_destination = 'jsonlog' and logging_collector = on for error details)"
		if err != nil {
			l.disabled = "cannot read the server log: " + pgMessage(err)
		}
		return l.last
	}
	var size int64
	if err := conn.QueryRow(ctx, `SELECT size FROM pg_stat_file($1)`, *file).Scan(&size); err != nil {
		l.disabled = "cannot read the server log: " + pgMessage(err)
		return l.last
	}
	if *file != l.file {
		first := l.file == ""
		l.file, l.offset = *file, 0
		if first && size > logInitialWindow {
			l.offset = size - logInitialWindow
		}
	}
	if size < l.offset {
		l.offset = 0 // truncated
	}
	for l.offset < size {
		n := min(size-l.offset, logReadMax)
		var chunk []byte
		if err := conn.QueryRow(ctx, `SELECT pg_read_binary_file($1, $2, $3)`, l.file, l.offset, n).Scan(&chunk); err != nil {
			l.disabled = "cannot read the server log: " + pgMessage(err)
			return l.last
		}
		end := bytes.LastIndexByte(chunk, '\n')
		if end < 0 {
			break // a line still being written
		}
		l.scan(chunk[:end+1])
		l.offset += int64(end + 1)
	}
	return l.last
}

func (l *logTail) scan(b []byte) {
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var ll logLine
		if json.Unmarshal(line, &ll) != nil {
			continue
		}
		if m := startedRe.FindStringSubmatch(ll.Message); m != nil {
			if m[1] == l.sub {
				l.pids[ll.PID] = true
			} else {
				delete(l.pids, ll.PID)
			}
			continue
		}
		if ll.Severity != "ERROR" && ll.Severity != "FATAL" {
			continue
		}
		if !l.pids[ll.PID] && !strings.Contains(ll.Context, `"`+l.origin+`"`) {
			continue
		}
		at := time.Now().UnixNano()
		if ts, err := time.Parse("2006-01-02 15:04:05.000 MST", ll.Timestamp); err == nil {
			at = ts.UnixNano()
		}
		msg := ll.Message
		if ll.Detail != "" {
			msg += " (" + ll.Detail + ")"
		}
		l.last = &fsm.ReplicationIssue{Code: classifyWorkerError(ll.State, ll.Message), Message: msg, At: at}
	}
}

// classifyWorkerError maps an apply or sync worker's error to an issue
// code.
func classifyWorkerError(state, msg string) string {
	switch {
	case state == "23505" || state == "23P01":
		return fsm.IssueConflict
	case strings.Contains(msg, "logical replication target relation") && strings.Contains(msg, "does not exist"):
		return fsm.IssueMissingTable
	case strings.Contains(msg, "missing replicated column"):
		return fsm.IssueMissingColumn
	case state == "42501" || strings.Contains(msg, "permission denied"):
		return fsm.IssuePermissionDenied
	case strings.Contains(msg, "could not connect to the publisher"):
		return fsm.IssuePublisherUnreachable
	case strings.HasPrefix(state, "23"):
		return fsm.IssueConflict
	}
	return fsm.IssueApplyError
}
