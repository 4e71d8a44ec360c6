package chaos

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// WorkloadConfig shapes the clients.
type WorkloadConfig struct {
	// Keys is how many register keys (tenants) are in use at a time.
	// PerKey bounds the operations in flight on one key. A key is retired,
	// and a fresh one takes its place, after OpsPerKey operations or when
	// an operation on it has been in flight for StuckAfter (a fault holds
	// it). So every key's history is short and never has more than PerKey
	// concurrent operations, which keeps porcupine's search small (as
	// Jepsen's independent keys do), while new operations keep flowing to
	// fresh keys whatever hangs.
	Keys, PerKey, OpsPerKey int
	StuckAfter              time.Duration
	// Rate is how many operations start per second; Workers bounds how
	// many are in flight, so that requests stuck behind a fault do not
	// stop the others.
	Rate    float64
	Workers int
	// Timeout bounds one request.
	Timeout time.Duration
	// Percentages of operations: linearizable reads, read-then-cas, plain
	// writes, create-only writes of fresh keys (checked for durability).
	// The rest up to 100 are reads.
	CASPct, PutPct, DurablePct int
	// Region is every tenant's home region; Run registers it first.
	Region string
	// Seed drives each worker's choices.
	Seed uint64
	// Token is sent by every request; ClientIP is the source address of
	// every client connection; TLS is the client side of HTTPS (the
	// federation CA).
	Token, ClientIP string
	TLS             *tls.Config
}

func (c *WorkloadConfig) defaults() {
	if c.Keys == 0 {
		c.Keys = 24
	}
	if c.PerKey == 0 {
		c.PerKey = 3
	}
	if c.OpsPerKey == 0 {
		c.OpsPerKey = 300
	}
	if c.StuckAfter == 0 {
		c.StuckAfter = time.Second
	}
	if c.Rate == 0 {
		c.Rate = 250
	}
	if c.Workers == 0 {
		c.Workers = 1024
	}
	if c.Timeout == 0 {
		c.Timeout = 4 * time.Second
	}
	if c.CASPct+c.PutPct+c.DurablePct == 0 {
		c.CASPct, c.PutPct, c.DurablePct = 30, 15, 10
	}
	if c.Region == "" {
		c.Region = "us-east"
	}
}

// durablePrefix starts the ids of create-only tenants.
const durablePrefix = "d-"

// Workload runs clients against the servers' proxied APIs and records
// what they see.
type Workload struct {
	cfg     WorkloadConfig
	clients []*client.Client
	names   []string
	Hist    *History
	Durable *DurableWrites

	seq, opSeq atomic.Uint64

	keyMu   sync.Mutex
	active  []*keySlot
	keyGen  int
	retired int

	mu      sync.Mutex
	acks    []time.Time // return times of acknowledged writes
	answers []time.Time // return times of operations with a definite answer

	// Counters: operations started, skipped because every worker was busy
	// or every key was at its bound; writes acknowledged, failed, of
	// unknown outcome, refused by cas; reads without an answer.
	Started, SkippedWorkers, SkippedKeys, Acked, Failed, Unknown, Conflict, Dropped atomic.Int64

	errMu  sync.Mutex
	errors map[string]int
}

// NewWorkload prepares clients for the given servers (names and proxied
// URLs in the same order).
func NewWorkload(cfg WorkloadConfig, names, urls []string) (*Workload, error) {
	cfg.defaults()
	d := &net.Dialer{Timeout: cfg.Timeout}
	if cfg.ClientIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(cfg.ClientIP)}
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     cfg.TLS,
		MaxIdleConns:        cfg.Workers,
		MaxIdleConnsPerHost: cfg.Workers,
		IdleConnTimeout:     30 * time.Second,
	}}
	w := &Workload{cfg: cfg, names: names, Hist: NewHistory(), Durable: newDurableWrites(), errors: map[string]int{}}
	for _, u := range urls {
		c, err := client.New(u, client.WithToken(cfg.Token), client.WithHTTPClient(hc))
		if err != nil {
			return nil, err
		}
		w.clients = append(w.clients, c)
	}
	return w, nil
}

// keySlot is a key in use and the start times of its operations in
// flight.
type keySlot struct {
	key      string
	ops      int
	inflight map[int64]time.Time // op id -> start
}

func (w *Workload) newSlot() *keySlot {
	w.keyGen++
	return &keySlot{key: fmt.Sprintf("k%04d", w.keyGen), inflight: map[int64]time.Time{}}
}

// acquire picks a key with room for one more operation, retiring keys that
// are used up or hold a stuck operation. It returns nil when every key is
// at its bound.
func (w *Workload) acquire(rng *rand.Rand, id int64) *keySlot {
	w.keyMu.Lock()
	defer w.keyMu.Unlock()
	if w.active == nil {
		for i := 0; i < w.cfg.Keys; i++ {
			w.active = append(w.active, w.newSlot())
		}
	}
	now := time.Now()
	for i, k := range w.active {
		stuck := false
		for _, t := range k.inflight {
			if now.Sub(t) > w.cfg.StuckAfter {
				stuck = true
			}
		}
		if stuck || k.ops >= w.cfg.OpsPerKey {
			w.active[i] = w.newSlot()
			w.retired++
		}
	}
	start := rng.IntN(len(w.active))
	for j := range w.active {
		k := w.active[(start+j)%len(w.active)]
		if len(k.inflight) < w.cfg.PerKey {
			k.ops++
			k.inflight[id] = now
			return k
		}
	}
	return nil
}

func (w *Workload) release(k *keySlot, id int64) {
	w.keyMu.Lock()
	defer w.keyMu.Unlock()
	delete(k.inflight, id)
}

// KeysUsed returns how many register keys the workload has used.
func (w *Workload) KeysUsed() int {
	w.keyMu.Lock()
	defer w.keyMu.Unlock()
	return w.keyGen
}

// activeKeys returns the keys in use now.
func (w *Workload) activeKeys() []string {
	w.keyMu.Lock()
	defer w.keyMu.Unlock()
	out := make([]string, len(w.active))
	for i, k := range w.active {
		out[i] = k.key
	}
	return out
}

// Run starts operations at the configured rate until ctx ends, then waits
// for the ones in flight.
func (w *Workload) Run(ctx context.Context) {
	work := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < w.cfg.Workers; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.cfg.Seed, uint64(id)))
			for {
				select {
				case <-ctx.Done():
					return
				case <-work:
					w.one(id, rng)
				}
			}
		}(i)
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / w.cfg.Rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
			select {
			case work <- struct{}{}:
				w.Started.Add(1)
			default:
				w.SkippedWorkers.Add(1)
			}
		}
	}
}

// one runs one operation chosen by rng on a random server.
func (w *Workload) one(id int, rng *rand.Rand) {
	target := rng.IntN(len(w.clients))
	p := rng.IntN(100)
	if p >= w.cfg.CASPct+w.cfg.PutPct && p < w.cfg.CASPct+w.cfg.PutPct+w.cfg.DurablePct {
		w.durable(target)
		return
	}
	opID := int64(w.opSeq.Add(1))
	slot := w.acquire(rng, opID)
	if slot == nil {
		w.SkippedKeys.Add(1)
		return
	}
	defer w.release(slot, opID)
	key := slot.key
	switch {
	case p < w.cfg.CASPct:
		found, ok := w.read(id, target, key)
		if !ok {
			return
		}
		in := Input{Kind: OpCAS, Key: key, Value: w.value()}
		if found != nil {
			in.ExpExists, in.ExpValue, in.ExpIndex = true, found.Labels["v"], found.ModifyIndex
		}
		w.write(id, target, in)
	case p < w.cfg.CASPct+w.cfg.PutPct:
		w.write(id, target, Input{Kind: OpPut, Key: key, Value: w.value()})
	default:
		w.read(id, target, key)
	}
}

func (w *Workload) value() string { return fmt.Sprintf("v%d", w.seq.Add(1)) }

// read does a linearizable read and records it. ok is false when the read
// got no answer (it is then left out of the history: a read changes
// nothing).
func (w *Workload) read(id, target int, key string) (found *fsm.Tenant, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout)
	defer cancel()
	call := w.Hist.Now()
	t, _, err := w.clients[target].Tenant(ctx, key, nil)
	ret := w.Hist.Now()
	in := Input{Kind: OpRead, Key: key}
	switch {
	case err == nil:
		w.Hist.Add(id, in, call, Output{Result: ResOK, Value: t.Labels["v"], Index: t.ModifyIndex}, ret)
		w.answered(ret, false)
		return t, true
	case client.IsCode(err, "tenant_not_found"):
		w.Hist.Add(id, in, call, Output{Result: ResNotFound}, ret)
		w.answered(ret, false)
		return nil, true
	}
	w.Dropped.Add(1)
	w.noteError(err)
	return nil, false
}

// write sends a put or cas, records it, and returns its result.
func (w *Workload) write(id, target int, in Input) Output {
	var cas *uint64
	if in.Kind == OpCAS {
		cas = client.CAS(in.ExpIndex)
	}
	call := w.Hist.Now()
	out, failed := w.put(target, in.Key, in.Value, cas)
	ret := w.Hist.Now()
	if failed {
		return out // definitely not applied: not part of the history
	}
	w.Hist.Add(id, in, call, out, ret)
	return out
}

// put sends PUT /v1/tenants/{key} and classifies the answer. failed means
// the write certainly did not happen.
func (w *Workload) put(target int, key, value string, cas *uint64) (out Output, failed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout)
	defer cancel()
	t, err := w.clients[target].PutTenant(ctx, &fsm.Tenant{ID: key, HomeRegion: w.cfg.Region, Labels: map[string]string{"v": value}}, cas)
	ret := w.Hist.Now()
	if err == nil {
		w.Acked.Add(1)
		w.answered(ret, true)
		return Output{Result: ResOK, Index: t.ModifyIndex}, false
	}
	w.noteError(err)
	r, failed := classify(err)
	switch {
	case failed:
		w.Failed.Add(1)
		return Output{}, true
	case r == ResConflict:
		w.Conflict.Add(1)
		w.answered(ret, false)
	default:
		w.Unknown.Add(1)
	}
	return Output{Result: r}, false
}

// durable creates a fresh tenant that nothing overwrites.
func (w *Workload) durable(target int) {
	key := fmt.Sprintf("%s%d", durablePrefix, w.seq.Add(1))
	out, failed := w.put(target, key, "durable", client.CAS(0))
	switch {
	case failed:
		w.Durable.set(key, ResConflict)
	case out.Result == ResOK:
		w.Durable.set(key, ResOK)
	case out.Result == ResUnknown:
		w.Durable.set(key, ResUnknown)
	default:
		w.Durable.set(key, ResConflict)
	}
}

// classify sorts a failed write: failed when it certainly was not applied
// (refused before the log, or never sent), else ResConflict for a refused
// cas or ResUnknown when it may have been applied.
func classify(err error) (r Result, failed bool) {
	var ae *client.Error
	if errors.As(err, &ae) {
		switch {
		case ae.Status == http.StatusConflict:
			return ResConflict, false
		case ae.Code == "outcome_unknown":
			return ResUnknown, false
		case ae.Status == http.StatusServiceUnavailable:
			return 0, true // no_leader, busy, shutting_down
		case ae.Status >= 500:
			return ResUnknown, false
		}
		return 0, true // a 4xx: refused before the log
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return 0, true // never sent
	}
	return ResUnknown, false // timeout, reset, EOF after sending
}

func (w *Workload) answered(at int64, ack bool) {
	t := w.Hist.Time(at)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.answers = append(w.answers, t)
	if ack {
		w.acks = append(w.acks, t)
	}
}

// Acks returns the sorted return times of acknowledged writes.
func (w *Workload) Acks() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := append([]time.Time(nil), w.acks...)
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// AnsweredBetween counts operations with a definite answer returned in
// [from, to).
func (w *Workload) AnsweredBetween(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, t := range w.answers {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// noteError counts errors by a short description, for the report.
func (w *Workload) noteError(err error) {
	var ae *client.Error
	desc := ""
	switch {
	case errors.As(err, &ae):
		desc = fmt.Sprintf("HTTP %d %s", ae.Status, ae.Code)
		if ae.Status == http.StatusInternalServerError {
			// An unmapped error is worth reading in the report.
			msg := ae.Message
			if len(msg) > 120 {
				msg = msg[:120]
			}
			desc += " (" + msg + ")"
		}
	case errors.Is(err, context.DeadlineExceeded):
		desc = "timeout"
	default:
		desc = err.Error()
		if i := strings.LastIndex(desc, ": "); i >= 0 {
			desc = desc[i+2:]
		}
	}
	w.errMu.Lock()
	w.errors[desc]++
	w.errMu.Unlock()
}

// Errors returns the error counts by description.
func (w *Workload) Errors() map[string]int {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	out := make(map[string]int, len(w.errors))
	for k, v := range w.errors {
		out[k] = v
	}
	return out
}

// FinalWrites writes every key once more after healing, retrying definite
// failures and unknown outcomes with fresh values, and then reads every
// key back; all of it is recorded. It fails when a key's write is not
// acknowledged within timeout.
func (w *Workload) FinalWrites(ctx context.Context, timeout time.Duration) error {
	id := w.cfg.Workers
	deadline := time.Now().Add(timeout)
	for k, key := range w.activeKeys() {
		attempt := 0
		// Every attempt is recorded: a fixed pace keeps the history short.
		err := testutil.PollEvery(ctx, time.Until(deadline), 100*time.Millisecond, func() error {
			out := w.write(id, attempt%len(w.clients), Input{Kind: OpPut, Key: key, Value: w.value()})
			attempt++
			if out.Result != ResOK {
				return errors.New("not acknowledged")
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("final write of %s not acknowledged within %s", key, timeout)
		}
		if _, ok := w.read(id, k%len(w.clients), key); !ok {
			return fmt.Errorf("final read of %s got no answer", key)
		}
	}
	return nil
}

// Tenants lists every tenant id with a linearizable read.
func (w *Workload) Tenants(ctx context.Context) (map[string]bool, error) {
	var lastErr error
	for i := range w.clients {
		ts, _, err := w.clients[i].Tenants(ctx, "", nil)
		if err != nil {
			lastErr = err
			continue
		}
		out := make(map[string]bool, len(ts))
		for _, t := range ts {
			out[t.ID] = true
		}
		return out, nil
	}
	return nil, lastErr
}
