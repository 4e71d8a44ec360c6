package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// settleInterval bounds the wait between steps while a task has not
// settled (waiting for its publisher, copying, failing), so that setting up
// or recovering takes seconds, not intervals.
const settleInterval = time.Second

// every runs step until ctx ends or step reports done, waiting interval
// between steps, or at most settleInterval when step says it is not
// settled.
func every(ctx context.Context, interval time.Duration, step func(ctx context.Context) (done, settled bool)) {
	for {
		done, settled := step(ctx)
		if done || ctx.Err() != nil {
			return
		}
		wait := interval
		if !settled && wait > settleInterval {
			wait = settleInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// status turns a result's issues into the task status an agent reports.
func status(issues []fsm.ReplicationIssue, done bool, result any) structs.TaskStatus {
	st := structs.TaskStatus{Status: fsm.TaskRunning, Result: result}
	if done {
		st.Status = fsm.TaskSucceeded
	}
	if len(issues) > 0 {
		st.Status = fsm.TaskFailing
		st.Error = issues[0].Message
		if len(issues) > 1 {
			st.Error = fmt.Sprintf("%s (and %d more issues)", issues[0].Message, len(issues)-1)
		}
	}
	return st
}

// localConn keeps one connection to the agent's database, reopened after a
// failure.
type localConn struct {
	dsn  string
	conn *pgx.Conn
}

func (l *localConn) get(ctx context.Context) (*pgx.Conn, error) {
	if l.conn != nil && !l.conn.IsClosed() {
		return l.conn, nil
	}
	c, err := connectLocal(ctx, l.dsn)
	if err != nil {
		return nil, err
	}
	l.conn = c
	return c, nil
}

// drop forgets a connection that failed, so the next get reconnects.
func (l *localConn) drop() {
	if l.conn != nil {
		_ = l.conn.Close(context.Background())
		l.conn = nil
	}
}

func (l *localConn) close() { l.drop() }

func unreachable(what string, err error) fsm.ReplicationIssue {
	code := fsm.IssueDatabaseUnreachable
	if what == "publisher" {
		code = fsm.IssuePublisherUnreachable
	}
	msg := map[string]string{
		"region":    "cannot reach the region's PostgreSQL",
		"publisher": "cannot reach the source region's PostgreSQL",
	}[what]
	return fsm.ReplicationIssue{Code: code, Message: msg + ": " + pgMessage(err), At: time.Now().UnixNano()}
}

func decodeSpec(t *fsm.Task, out any) error {
	if err := json.Unmarshal(t.Spec, out); err != nil {
		return fmt.Errorf("task %s: bad spec: %w", t.ID, err)
	}
	return nil
}
