package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// History records the register operations of a run with call and return
// times (nanoseconds since the history began, from the monotonic clock).
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// NewHistory starts an empty history.
func NewHistory() *History { return &History{start: time.Now()} }

// Now returns the history's clock.
func (h *History) Now() int64 { return time.Since(h.start).Nanoseconds() }

// Time converts a history timestamp to wall-clock time.
func (h *History) Time(ts int64) time.Time { return h.start.Add(time.Duration(ts)) }

// Add records an operation. An operation whose outcome is unknown gets its
// return time when the history is read (Operations): the end of history.
func (h *History) Add(client int, in Input, call int64, out Output, ret int64) {
	if out.Result == ResUnknown {
		ret = -1
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// Operations returns the recorded operations; writes of unknown outcome
// return after every other operation.
func (h *History) Operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	var end int64
	for _, op := range h.ops {
		if op.Return > end {
			end = op.Return
		}
		if op.Call > end {
			end = op.Call
		}
	}
	out := make([]porcupine.Operation, len(h.ops))
	copy(out, h.ops)
	for i := range out {
		if out[i].Return < 0 {
			out[i].Return = end + 1
		}
	}
	return out
}

// KeyVerdict is porcupine's verdict on one key's history.
type KeyVerdict struct {
	Key     string                `json:"key"`
	Ops     int                   `json:"ops"`
	Unknown int                   `json:"unknown_writes"`
	Result  porcupine.CheckResult `json:"result"`
	// HTML is the visualisation written for a key that is not Ok.
	HTML string `json:"html,omitempty"`
}

// CheckLinearizable checks the history per key with porcupine within
// timeout. For every key that is not Ok (Illegal, or Unknown when the
// search ran out of time) it writes porcupine's HTML visualisation to
// htmlDir.
func CheckLinearizable(ops []porcupine.Operation, timeout time.Duration, htmlDir string) []KeyVerdict {
	parts := RegisterModel.Partition(ops)
	single := RegisterModel
	single.Partition = nil
	out := make([]KeyVerdict, len(parts))
	deadline := time.Now().Add(timeout)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i, part := range parts {
		v := KeyVerdict{Key: part[0].Input.(Input).Key, Ops: len(part)}
		for _, op := range part {
			if op.Output.(Output).Result == ResUnknown {
				v.Unknown++
			}
		}
		out[i] = v
		wg.Add(1)
		go func(i int, part []porcupine.Operation) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			left := time.Until(deadline)
			if left <= 0 {
				left = time.Millisecond
			}
			// The plain check is much cheaper; the verbose one, which
			// keeps partial linearizations for the picture, runs only for
			// a key that is not Ok.
			res := porcupine.CheckOperationsTimeout(single, part, left)
			out[i].Result = res
			if res != porcupine.Ok && htmlDir != "" {
				vt := time.Until(deadline)
				if vt < time.Minute {
					vt = time.Minute
				}
				_, info := porcupine.CheckOperationsVerbose(single, part, vt)
				p := filepath.Join(htmlDir, "linearizability-"+out[i].Key+".html")
				if err := os.MkdirAll(htmlDir, 0o755); err == nil {
					if err := porcupine.VisualizePath(single, info, p); err == nil {
						out[i].HTML = p
					}
				}
			}
		}(i, part)
	}
	wg.Wait()
	return out
}

// DurableWrites tracks the create-only writes of unique keys: each is
// acknowledged, failed (definitely not applied) or unknown.
type DurableWrites struct {
	mu     sync.Mutex
	status map[string]Result // ResOK, ResConflict (failed), ResUnknown
}

func newDurableWrites() *DurableWrites { return &DurableWrites{status: map[string]Result{}} }

func (d *DurableWrites) set(key string, r Result) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status[key] = r
}

// Counts returns how many writes were acknowledged, failed and unknown.
func (d *DurableWrites) Counts() (acked, failed, unknown int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range d.status {
		switch r {
		case ResOK:
			acked++
		case ResUnknown:
			unknown++
		default:
			failed++
		}
	}
	return
}

// Check compares the set of keys found after healing with what was
// written: lost are acknowledged keys missing, phantom are keys found that
// were never written or whose write was reported as failed.
func (d *DurableWrites) Check(found map[string]bool, isDurable func(string) bool) (lost, phantom []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, r := range d.status {
		if r == ResOK && !found[k] {
			lost = append(lost, k)
		}
	}
	for k := range found {
		if !isDurable(k) {
			continue
		}
		if r, ok := d.status[k]; !ok || (r != ResOK && r != ResUnknown) {
			phantom = append(phantom, k)
		}
	}
	sort.Strings(lost)
	sort.Strings(phantom)
	return lost, phantom
}

// availabilityWindow returns the longest stretch within [from, to] without
// an acknowledged write: the longest gap between from, the
// acknowledgements in the interval, and to. When no write was acknowledged
// in the interval at all, the stretch runs from from to the first
// acknowledgement after it (or to, if there is none). acks must be sorted.
func availabilityWindow(acks []time.Time, from, to time.Time) time.Duration {
	i := sort.Search(len(acks), func(i int) bool { return !acks[i].Before(from) })
	if i == len(acks) {
		return to.Sub(from)
	}
	if acks[i].After(to) {
		return acks[i].Sub(from)
	}
	prev := from
	var longest time.Duration
	for ; i < len(acks) && !acks[i].After(to); i++ {
		if d := acks[i].Sub(prev); d > longest {
			longest = d
		}
		prev = acks[i]
	}
	if d := to.Sub(prev); d > longest {
		longest = d
	}
	return longest
}

// waitCtx sleeps for d unless ctx ends first. Nemeses hold faults this
// long; it is never used to wait for a condition.
func waitCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func describeOps(n int, d time.Duration) string {
	if d <= 0 {
		return fmt.Sprintf("%d ops", n)
	}
	return fmt.Sprintf("%d ops (%.0f/s)", n, float64(n)/d.Seconds())
}

// savedOp is an operation as saved to history.json.
type savedOp struct {
	Client int    `json:"client"`
	Input  Input  `json:"input"`
	Call   int64  `json:"call"`
	Output Output `json:"output"`
	Return int64  `json:"return"`
}

// saveHistory writes the operations as JSON, so that a run's history can
// be checked again or inspected (LoadHistory reads it back).
func saveHistory(path string, ops []porcupine.Operation) error {
	out := make([]savedOp, len(ops))
	for i, op := range ops {
		out[i] = savedOp{Client: op.ClientId, Input: op.Input.(Input), Call: op.Call, Output: op.Output.(Output), Return: op.Return}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// LoadHistory reads a history written by a run.
func LoadHistory(path string) ([]porcupine.Operation, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var in []savedOp
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	ops := make([]porcupine.Operation, len(in))
	for i, o := range in {
		ops[i] = porcupine.Operation{ClientId: o.Client, Input: o.Input, Call: o.Call, Output: o.Output, Return: o.Return}
	}
	return ops, nil
}
