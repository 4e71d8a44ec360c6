package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// dpKey names a row of a tenant: its table and id (the tenant is the
// writer's).
type dpKey struct {
	Table string
	ID    int64
}

// dpVal is what a row holds besides its key and its PII column: what a
// mirror must show.
type dpVal struct {
	Amount int64
	Note   string
}

// dpRow is the model of one row: the states it may be in after the
// writes its writer made. A nil entry is "absent". An acknowledged write
// leaves one state; a write of unknown outcome adds its result to the
// states before it.
type dpRow struct {
	poss []*dpVal
}

func (r *dpRow) allows(v *dpVal) bool {
	for _, p := range r.poss {
		if (p == nil) == (v == nil) && (p == nil || *p == *v) {
			return true
		}
	}
	return false
}

// certain reports whether the row has one possible state, and whether
// that state is present.
func (r *dpRow) certain() (one, present bool) {
	return len(r.poss) == 1, len(r.poss) == 1 && r.poss[0] != nil
}

// dpWriter writes one tenant's rows into its home PostgreSQL and records
// what PostgreSQL acknowledged: inserts of fresh ids, updates and deletes
// of rows whose state it knows. Each write is one autocommit statement. A
// write whose connection failed before anything was sent did not happen;
// any other error or a timeout leaves it of unknown outcome ("maybe").
type dpWriter struct {
	t        DataPlaneTenant
	dsn      func() string
	interval time.Duration
	rng      *rand.Rand

	mu      sync.Mutex
	rows    map[dpKey]*dpRow
	settled []dpKey // rows certainly present: candidates for updates and deletes
	nextID  int64
	seq     int64
	errs    map[string]int

	Acked, Maybe, NotSent  atomic.Int64
	Inserts, Updates, Dels atomic.Int64
}

func newDPWriter(t DataPlaneTenant, dsn func() string, interval time.Duration, seed uint64) *dpWriter {
	return &dpWriter{t: t, dsn: dsn, interval: interval, rng: rand.New(rand.NewPCG(seed, 0x6470)),
		rows: map[dpKey]*dpRow{}, errs: map[string]int{}}
}

// piiValue is the value a row's PII column gets: marked, so that a check
// can look for it in any column of a mirror.
func piiValue(tenant string, seq int64) string {
	return fmt.Sprintf("%s+%d%s", tenant, seq, piiMarker)
}

const piiMarker = "@pii.example"

type dpOp struct {
	kind string // insert, update, delete
	key  dpKey
	val  *dpVal // nil for delete
	pii  string
}

// next chooses the next write, and takes its row out of the settled set
// while it is in flight.
func (w *dpWriter) next() dpOp {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	r := w.rng.IntN(100)
	table := w.t.Tables[w.rng.IntN(len(w.t.Tables))].Name
	if len(w.settled) > 0 && r < 35 {
		i := w.rng.IntN(len(w.settled))
		k := w.settled[i]
		w.settled[i] = w.settled[len(w.settled)-1]
		w.settled = w.settled[:len(w.settled)-1]
		if r < 12 {
			return dpOp{kind: "delete", key: k}
		}
		return dpOp{kind: "update", key: k, val: &dpVal{Amount: w.seq, Note: fmt.Sprintf("u%d", w.seq)}, pii: piiValue(w.t.ID, w.seq)}
	}
	w.nextID++
	return dpOp{kind: "insert", key: dpKey{table, w.nextID}, val: &dpVal{Amount: w.seq, Note: fmt.Sprintf("i%d", w.seq)}, pii: piiValue(w.t.ID, w.seq)}
}

// outcome of a write.
const (
	dpAcked = iota
	dpMaybe
	dpNotSent
)

// record applies a write's outcome to the model.
func (w *dpWriter) record(op dpOp, outcome int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.errs[errClass(err)]++
	}
	row := w.rows[op.key]
	if row == nil {
		row = &dpRow{poss: []*dpVal{nil}}
	}
	switch outcome {
	case dpAcked:
		w.Acked.Add(1)
		row.poss = []*dpVal{op.val}
		switch op.kind {
		case "insert":
			w.Inserts.Add(1)
		case "update":
			w.Updates.Add(1)
		case "delete":
			w.Dels.Add(1)
		}
	case dpMaybe:
		w.Maybe.Add(1)
		if !row.allows(op.val) {
			row.poss = append(row.poss, op.val)
		}
	case dpNotSent:
		w.NotSent.Add(1)
	}
	w.rows[op.key] = row
	if _, present := row.certain(); present {
		w.settled = append(w.settled, op.key)
	}
}

// exec runs a write on conn.
func (w *dpWriter) exec(ctx context.Context, conn *pgx.Conn, op dpOp) error {
	tbl, pii := pgx.Identifier{op.key.Table}.Sanitize(), pgx.Identifier{w.t.pii(op.key.Table)}.Sanitize()
	var err error
	var tag pgconn.CommandTag
	switch op.kind {
	case "insert":
		tag, err = conn.Exec(ctx, "INSERT INTO "+tbl+" (tenant_id, id, amount, note, "+pii+") VALUES ($1, $2, $3, $4, $5)",
			w.t.ID, op.key.ID, op.val.Amount, op.val.Note, op.pii)
	case "update":
		tag, err = conn.Exec(ctx, "UPDATE "+tbl+" SET amount = $3, note = $4, "+pii+" = $5 WHERE tenant_id = $1 AND id = $2",
			w.t.ID, op.key.ID, op.val.Amount, op.val.Note, op.pii)
	case "delete":
		tag, err = conn.Exec(ctx, "DELETE FROM "+tbl+" WHERE tenant_id = $1 AND id = $2", w.t.ID, op.key.ID)
	}
	if err == nil && tag.RowsAffected() != 1 {
		// The row was certainly there: the home lost it. The checks will
		// say so; the write is recorded as what PostgreSQL acknowledged.
		w.mu.Lock()
		w.errs[fmt.Sprintf("%s of %s/%d touched %d rows", op.kind, op.key.Table, op.key.ID, tag.RowsAffected())]++
		w.mu.Unlock()
	}
	return err
}

// run writes until ctx ends, one write every interval, reconnecting
// after every failure.
func (w *dpWriter) run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			c, err := pgx.Connect(cctx, w.dsn())
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					w.mu.Lock()
					w.errs["connect: "+errClass(err)]++
					w.mu.Unlock()
				}
				_ = waitCtx(ctx, 200*time.Millisecond)
				continue
			}
			conn = c
		}
		op := w.next()
		octx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := w.exec(octx, conn, op)
		cancel()
		switch {
		case err == nil:
			w.record(op, dpAcked, nil)
		case pgconn.SafeToRetry(err):
			w.record(op, dpNotSent, err)
		default:
			w.record(op, dpMaybe, err)
		}
		if err != nil {
			_ = conn.Close(context.Background())
			conn = nil
		}
		_ = waitCtx(ctx, w.interval)
	}
}

// insertNow inserts one fresh row on conn (for lag probes) and records
// it; it returns the row's key and whether PostgreSQL acknowledged it.
func (w *dpWriter) insertNow(ctx context.Context, conn *pgx.Conn) (dpKey, bool) {
	w.mu.Lock()
	w.seq++
	w.nextID++
	op := dpOp{kind: "insert", key: dpKey{w.t.Tables[0].Name, w.nextID}, val: &dpVal{Amount: w.seq, Note: fmt.Sprintf("probe%d", w.seq)}, pii: piiValue(w.t.ID, w.seq)}
	w.mu.Unlock()
	err := w.exec(ctx, conn, op)
	switch {
	case err == nil:
		w.record(op, dpAcked, nil)
	case pgconn.SafeToRetry(err):
		w.record(op, dpNotSent, err)
	default:
		w.record(op, dpMaybe, err)
	}
	return op.key, err == nil
}

// model returns a copy of the rows' states.
func (w *dpWriter) model() map[dpKey]*dpRow {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[dpKey]*dpRow, len(w.rows))
	for k, r := range w.rows {
		out[k] = &dpRow{poss: append([]*dpVal(nil), r.poss...)}
	}
	return out
}

func (w *dpWriter) errors() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int, len(w.errs))
	for k, v := range w.errs {
		out[k] = v
	}
	return out
}

// errClass shortens an error to a class for counting.
func errClass(err error) string {
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		return "SQLSTATE " + pe.Code
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	s := err.Error()
	for _, k := range []string{"connection refused", "unexpected EOF", "connection reset", "broken pipe", "closed", "timeout"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// summary counts the model's rows: those certainly present, those of
// unknown state.
func modelSummary(m map[dpKey]*dpRow) (present, uncertain int) {
	for _, r := range m {
		one, p := r.certain()
		switch {
		case !one:
			uncertain++
		case p:
			present++
		}
	}
	return present, uncertain
}

func sortedKeysDP(m map[dpKey]*dpRow) []dpKey {
	out := make([]dpKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Table != out[j].Table {
			return out[i].Table < out[j].Table
		}
		return out[i].ID < out[j].ID
	})
	return out
}
