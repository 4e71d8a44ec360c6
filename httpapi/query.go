package httpapi

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Consistency modes for reads.
const (
	Linearizable = "linearizable"
	Default      = "default"
	Stale        = "stale"
)

// Response headers.
const (
	HeaderIndex       = "X-Atomfed-Index"
	HeaderKnownLeader = "X-Atomfed-Known-Leader"
	HeaderLastContact = "X-Atomfed-Last-Contact"
	HeaderForwarded   = "X-Atomfed-Forwarded-By"
	HeaderServedBy    = "X-Atomfed-Served-By"
)

const (
	defaultBlockingWait = 5 * time.Minute
	maxBlockingWait     = 10 * time.Minute
)

// queryOptions are the read parameters every GET accepts.
type queryOptions struct {
	consistency string
	minIndex    uint64
	wait        time.Duration
}

func parseQuery(r *http.Request) (queryOptions, error) {
	return parseQueryAs(r, Linearizable)
}

// parseQueryAs parses the read parameters with consistency def when the
// request names none.
func parseQueryAs(r *http.Request, def string) (queryOptions, error) {
	q := r.URL.Query()
	o := queryOptions{consistency: def}
	if c := q.Get("consistency"); c != "" {
		if c != Linearizable && c != Default && c != Stale {
			return o, badRequest("invalid_consistency", fmt.Sprintf("consistency %q must be linearizable, default or stale", c))
		}
		o.consistency = c
	}
	if _, ok := q["stale"]; ok { // Consul-style shorthand
		o.consistency = Stale
	}
	if raw := q.Get("index"); raw != "" {
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return o, badRequest("invalid_index", fmt.Sprintf("index %q must be a non-negative integer", raw))
		}
		o.minIndex = n
		o.wait = defaultBlockingWait
	}
	if raw := q.Get("wait"); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d < 0 {
			return o, badRequest("invalid_wait", fmt.Sprintf("wait %q must be a duration such as 30s or 5m", raw))
		}
		if d > maxBlockingWait {
			d = maxBlockingWait
		}
		o.wait = d
	}
	return o, nil
}

// readFn builds a response from the state. It runs under the FSM's read
// lock, must not block, and returns the index the response reflects. That
// index must come from v.TableIndex (or from the state index, s.Index, in
// a read that calls no TableIndex at all): the tables a read asked for are
// the ones its blocking query watches.
type readFn func(v *view) (body any, index uint64, err error)

// view is the state as a read sees it: it records the tables whose index
// the read consulted, so that a blocking query wakes only when one of them
// changes. A read that consulted none watches every change.
type view struct {
	*fsm.State
	tables []string
}

// TableIndex returns the table's index and records that the read watches
// it.
func (v *view) TableIndex(table string) uint64 {
	if !slices.Contains(v.tables, table) {
		v.tables = append(v.tables, table)
	}
	return v.State.TableIndex(table)
}

// blockingWriteMargin is how far past a blocking query's longest wait its
// connection's write deadline is moved, to write the answer.
const blockingWriteMargin = time.Minute

// read answers a GET under the request's consistency mode, blocking when
// ?index is given. Reads this server cannot answer go to the leader.
func (a *API) read(w http.ResponseWriter, r *http.Request, fn readFn) {
	a.readAs(w, r, Linearizable, fn)
}

// readAs is read with consistency def when the request names none: a read
// every edge makes per request (GET /v1/route) answers from local state
// (Stale) rather than ask the leader for a read index each time.
func (a *API) readAs(w http.ResponseWriter, r *http.Request, def string, fn readFn) {
	opts, err := parseQueryAs(r, def)
	if err != nil {
		writeError(w, err)
		return
	}
	blocking := opts.minIndex > 0 && opts.wait > 0
	if blocking {
		if identityOf(r).Accessor == "" {
			// Only the anonymous region list reads without a token; it
			// answers at once and never holds a connection open.
			writeError(w, unauthenticated("blocking_query_unauthenticated",
				"a blocking query (?index=) needs a token: send Authorization: Bearer <token>, or drop index and wait"))
			return
		}
		// The server's WriteTimeout is shorter than a blocking query's
		// longest wait: move this response's deadline past it.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(opts.wait + opts.wait/16 + blockingWriteMargin))
	}
	held := false
	// forward sends the read to the leader. A blocking one holds a slot
	// here too while the leader holds it: this server keeps the client's
	// connection open all that time.
	forward := func() {
		if blocking && !held {
			done, err := a.blocking.acquire(identityOf(r).Accessor)
			if err != nil {
				writeError(w, err)
				return
			}
			defer done()
		}
		a.forward(w, r, nil, false)
	}
	switch opts.consistency {
	case Linearizable:
		// Served here: ConsistentRead makes a follower's read linearizable
		// (read index) as it does the leader's.
	case Default:
		// Only once leadership is established: before its Barrier a new
		// leader may not have applied everything its predecessor committed.
		if !a.c.IsLeader() {
			forward()
			return
		}
	}
	ctx := r.Context()
	var timeout <-chan time.Time
	if blocking {
		// Jitter spreads the wake-ups of many watchers with the same wait.
		d := opts.wait + time.Duration(rand.Int64N(int64(opts.wait/16)+1))
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	f := a.c.FSM()
	timedOut := false
	var tables []string // what the previous read consulted
	for {
		if opts.consistency == Linearizable && !a.skipReadBarrier() {
			if err := a.c.ConsistentRead(ctx); err != nil {
				if (errors.Is(err, structs.ErrNotLeader) || errors.Is(err, structs.ErrFollowerBehind)) && r.Header.Get(HeaderForwarded) == "" {
					forward()
					return
				}
				writeError(w, err)
				return
			}
		}
		// The watch is taken before the read, so no change between the
		// two is missed. The first read does not know its tables yet and
		// watches everything; the ones after watch only what it consulted
		// (a read's tables do not change between two rounds).
		var watch <-chan struct{}
		release := func() {}
		if len(tables) > 0 {
			watch, release = f.WatchTables(tables...)
		} else {
			watch = f.WatchCh()
		}
		v := &view{}
		var body any
		var index uint64
		var rerr error
		f.Read(func(s *fsm.State) { v.State = s; body, index, rerr = fn(v) })
		v.State = nil
		if opts.minIndex == 0 || index > opts.minIndex || timedOut {
			release()
			a.setReadHeaders(w, index, opts.consistency)
			if rerr != nil {
				writeError(w, rerr)
				return
			}
			writeJSON(w, http.StatusOK, body)
			return
		}
		if !held {
			// Counted only once it is about to wait: a query whose answer
			// is ready holds nothing.
			done, err := a.blocking.acquire(identityOf(r).Accessor)
			if err != nil {
				release()
				writeError(w, err)
				return
			}
			defer done()
			held = true
		}
		if len(tables) == 0 && len(v.tables) > 0 {
			// Now that the tables are known, watch only them. Taken
			// after the read, so a change in between is caught by the
			// index check of the next round.
			release()
			tables = v.tables
			continue
		}
		select {
		case <-watch:
		case <-timeout:
			timedOut = true
		case <-ctx.Done():
			release()
			return
		}
		release()
	}
}

func (a *API) setReadHeaders(w http.ResponseWriter, index uint64, consistency string) {
	h := w.Header()
	h.Set(HeaderIndex, strconv.FormatUint(index, 10))
	leader, _ := a.c.Leader()
	h.Set(HeaderKnownLeader, strconv.FormatBool(leader != ""))
	h.Set(HeaderServedBy, a.c.NodeID())
	if consistency == Stale {
		ms := "0"
		if a.c.State() != "Leader" {
			if lc, ok := a.c.Stats()["last_contact"]; ok {
				if d, err := time.ParseDuration(lc); err == nil {
					ms = strconv.FormatInt(d.Milliseconds(), 10)
				}
			}
		}
		h.Set(HeaderLastContact, ms)
	}
}

// write commits a command: on the leader directly, on a follower through
// the leader over the forwarding RPC (the follower has done the decoding
// and validation; the leader only commits). A command that was not applied
// because there is no leader right now waits (bounded, with jitter) for one
// and is tried again.
func (a *API) write(w http.ResponseWriter, r *http.Request, body []byte, t fsm.MessageType, cmd any, ok func(*fsm.ApplyResult)) {
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		res, err := a.apply(ctx, t, cmd)
		if (errors.Is(err, structs.ErrNotLeader) || errors.Is(err, structs.ErrNoLeader)) && attempt < 5 {
			// Not applied: wait for a leader, then try again.
			if _, _, werr := a.waitLeader(ctx); werr != nil {
				writeError(w, werr)
				return
			}
			continue
		}
		if errors.Is(err, structs.ErrForwardUnsupported) {
			// An older leader (rolling upgrade): proxy the request.
			a.forward(w, r, body, true)
			return
		}
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set(HeaderIndex, strconv.FormatUint(res.Index, 10))
		if res.Err != nil {
			writeError(w, res.Err)
			return
		}
		ok(res)
		return
	}
}

// apply commits cmd where it can: locally on the leader, else forwarded.
func (a *API) apply(ctx context.Context, t fsm.MessageType, cmd any) (*fsm.ApplyResult, error) {
	if a.c.State() == "Leader" {
		return a.c.Apply(ctx, t, cmd)
	}
	fr, err := a.c.ForwardApply(ctx, t, cmd, a.now().UnixNano())
	if err != nil {
		return nil, err
	}
	res := &fsm.ApplyResult{Index: fr.Index, Err: fr.Err}
	if fr.Err == nil && len(fr.Value) > 0 {
		v := fsm.ResultValue(t)
		if err := fsm.UnmarshalResult(fr.Value, v); err != nil {
			return nil, fmt.Errorf("%w: the leader's answer does not decode: %v", structs.ErrOutcomeUnknown, err)
		}
		res.Value = v
	}
	return res, nil
}

// stamp returns the leader clock for a command, in unix nanoseconds.
func (a *API) stamp() int64 { return a.now().UnixNano() }

// waitLeader returns the leader's HTTP URL, waiting up to LeaderWait (with
// jitter) for one to be elected. self is true when this server is the
// leader and has established leadership.
func (a *API) waitLeader(ctx context.Context) (url string, self bool, err error) {
	wait := a.cfg.LeaderWait + time.Duration(rand.Int64N(int64(a.cfg.LeaderWait/8)+1))
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ch := a.c.LeaderChangeCh()
		id, _ := a.c.Leader()
		switch {
		case id == a.c.NodeID() && a.c.IsLeader():
			return "", true, nil
		case id != "" && id != a.c.NodeID():
			if u, err := a.c.LeaderHTTP(); err == nil {
				return u, false, nil
			}
		}
		// No leader, or we are leader but still establishing: poll briefly.
		select {
		case <-ch:
		case <-time.After(25 * time.Millisecond):
		case <-deadline.C:
			return "", false, fmt.Errorf("%w: none elected within %s", structs.ErrNoLeader, wait.Round(time.Millisecond))
		case <-ctx.Done():
			return "", false, ctx.Err()
		}
	}
}
