package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"
)

// Ack is one acknowledged write of a Writer.
type Ack struct {
	ID  string
	Seq uint64
	// Sent is when the attempt that was acknowledged was sent; Acked is
	// when its answer arrived.
	Sent, Acked time.Time
}

// Writer is a steady writer for failover measurements: one client that
// writes tenant <Prefix>-<seq> with label seq=<seq>, one write at a time,
// and retries a write (to the next server) until it is acknowledged. An
// upsert of the same body is idempotent, so a retry of a write whose first
// attempt had an unknown outcome is safe. Every acknowledged write is
// recorded so it can be read back later.
type Writer struct {
	HTTP *HTTP
	// Targets are the server base URLs; attempts go to them in turn, so a
	// dead server costs one refused connection.
	Targets []string
	Prefix  string
	Region  string
	// Pause is the think time between writes; Backoff the pause after a
	// failed attempt. AttemptTimeout bounds one attempt.
	Pause, Backoff, AttemptTimeout time.Duration
	// Sticky keeps sending to the server that acknowledged the last write
	// and moves on only when an attempt fails, like a client that sticks
	// to a working endpoint; otherwise every attempt goes to the next
	// server. Set the fields before Run.
	Sticky bool
	// Request, when set, builds the write of seq to target (another
	// system's API); by default it is atomfed's tenant upsert.
	Request func(target string, id string, seq uint64) (method, url string, body []byte)

	mu       sync.Mutex
	acks     []Ack
	attempts int
	failures int
	lastErr  error
	notify   chan struct{} // closed and replaced on every ack
}

// NewWriter returns a writer with a 2 ms think time.
func NewWriter(h *HTTP, targets []string, prefix, region string) *Writer {
	return &Writer{HTTP: h, Targets: targets, Prefix: prefix, Region: region,
		Pause: 2 * time.Millisecond, Backoff: 10 * time.Millisecond, AttemptTimeout: 10 * time.Second,
		notify: make(chan struct{})}
}

// Run writes until ctx ends.
func (w *Writer) Run(ctx context.Context) {
	target := 0
	for seq := uint64(1); ctx.Err() == nil; seq++ {
		id := w.Prefix + "-" + strconv.FormatUint(seq, 10)
		for ctx.Err() == nil {
			method, url, body := w.request(w.Targets[target%len(w.Targets)], id, seq)
			target++
			actx, cancel := context.WithTimeout(ctx, w.AttemptTimeout)
			sent := time.Now()
			err := w.HTTP.Do(actx, method, url, body)
			cancel()
			w.record(id, seq, sent, err)
			if err == nil {
				if w.Sticky {
					target--
				}
				break
			}
			sleep(ctx, w.Backoff)
		}
		sleep(ctx, w.Pause)
	}
}

func (w *Writer) request(target, id string, seq uint64) (string, string, []byte) {
	if w.Request != nil {
		return w.Request(target, id, seq)
	}
	body, _ := json.Marshal(map[string]any{"home_region": w.Region, "labels": map[string]string{"seq": strconv.FormatUint(seq, 10)}})
	return http.MethodPut, target + "/v1/tenants/" + id, body
}

// LastAckBefore returns the last write acknowledged before t.
func (w *Writer) LastAckBefore(t time.Time) (Ack, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.acks) - 1; i >= 0; i-- {
		if w.acks[i].Acked.Before(t) {
			return w.acks[i], true
		}
	}
	return Ack{}, false
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (w *Writer) record(id string, seq uint64, sent time.Time, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.attempts++
	if err != nil {
		w.failures++
		w.lastErr = err
		return
	}
	w.acks = append(w.acks, Ack{ID: id, Seq: seq, Sent: sent, Acked: time.Now()})
	close(w.notify)
	w.notify = make(chan struct{})
}

// Acks returns the acknowledged writes so far, in order.
func (w *Writer) Acks() []Ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Ack(nil), w.acks...)
}

// Stats returns the number of attempts and of failed attempts, and the
// last failure.
func (w *Writer) Stats() (attempts, failures int, lastErr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.attempts, w.failures, w.lastErr
}

// WaitAcks waits until at least n writes are acknowledged.
func (w *Writer) WaitAcks(ctx context.Context, n int) error {
	for {
		w.mu.Lock()
		got, ch := len(w.acks), w.notify
		w.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			_, _, last := w.Stats()
			return fmt.Errorf("%d of %d writes acknowledged (last error: %v): %w", got, n, last, ctx.Err())
		}
	}
}

// WaitAckSentAfter waits for the first acknowledged write whose attempt was
// sent at or after t (so its answer cannot come from before t).
func (w *Writer) WaitAckSentAfter(ctx context.Context, t time.Time) (Ack, error) {
	for {
		w.mu.Lock()
		ch := w.notify
		for _, a := range w.acks {
			if !a.Sent.Before(t) {
				w.mu.Unlock()
				return a, nil
			}
		}
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			_, _, last := w.Stats()
			return Ack{}, fmt.Errorf("no write acknowledged (last error: %v): %w", last, ctx.Err())
		}
	}
}

// Verify reads every acknowledged write back with a linearizable read
// through c and returns an error naming the writes that are missing or
// wrong.
func Verify(ctx context.Context, c *client.Client, acks []Ack) error {
	var lost []string
	for _, a := range acks {
		t, _, err := c.Tenant(ctx, a.ID, &client.QueryOptions{Consistency: "linearizable"})
		switch {
		case client.StatusOf(err) == http.StatusNotFound:
			lost = append(lost, a.ID+" (not found)")
		case err != nil:
			return fmt.Errorf("read back %s via %s: %w", a.ID, c.Addr(), err)
		case t.Labels["seq"] != strconv.FormatUint(a.Seq, 10):
			lost = append(lost, fmt.Sprintf("%s (label seq=%q)", a.ID, t.Labels["seq"]))
		}
	}
	if len(lost) > 0 {
		return fmt.Errorf("%w: %d of %d acknowledged writes: %v", ErrLostWrites, len(lost), len(acks), lost)
	}
	return nil
}

// ErrLostWrites marks acknowledged writes that a linearizable read does not
// find.
var ErrLostWrites = errors.New("acknowledged writes lost")
