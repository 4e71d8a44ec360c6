package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/pglocal"
)

// EdgeWriter writes the tenant's rows through the edge, one at a time
// (Interval apart), and records each acknowledged row (id, region, time)
// and the answers that held (503 switchover_in_progress), were refused by
// the fence (409) or failed otherwise.
type EdgeWriter struct {
	mu     sync.Mutex
	Acked  []AckedRow
	Held   int
	Fenced int
	Other  []string
	stop   chan struct{}
	done   chan struct{}
}

// AckedRow is a write the region's application acknowledged.
type AckedRow struct {
	ID     int64
	Region string
	At     time.Time
}

// StartWriter starts a writer of tenant's rows through the edge (every
// interval; tag makes its emails unique).
func (f *DataPlaneFed) StartWriter(ctx context.Context, tenant, tag string, interval time.Duration) *EdgeWriter {
	w := &EdgeWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		hc := &http.Client{Timeout: 10 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			default:
			}
			body, _ := json.Marshal(map[string]string{"email": fmt.Sprintf("%s%d@acme.example", tag, i)})
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.EdgeURL+"/orders", bytes.NewReader(body))
			req.Header.Set("X-Atomfed-Tenant", tenant)
			resp, err := hc.Do(req)
			w.mu.Lock()
			if err != nil {
				w.Other = append(w.Other, err.Error())
			} else {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var out struct {
					ID     int64  `json:"id"`
					Region string `json:"region"`
				}
				switch {
				case resp.StatusCode == http.StatusOK && json.Unmarshal(b, &out) == nil && out.ID > 0:
					w.Acked = append(w.Acked, AckedRow{out.ID, out.Region, time.Now()})
				case resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), fsm.CodeSwitchoverInProgress):
					w.Held++
				case resp.StatusCode == http.StatusConflict:
					w.Fenced++
				default:
					w.Other = append(w.Other, fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b))))
				}
			}
			w.mu.Unlock()
			time.Sleep(interval)
		}
	}()
	return w
}

// Stop stops the writer and waits for its last write.
func (w *EdgeWriter) Stop() {
	close(w.stop)
	<-w.done
}

// FirstAckedIn is the time of the first write acknowledged in region at
// or after since (zero if none yet).
func (w *EdgeWriter) FirstAckedIn(region string, since time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.Acked {
		if a.Region == region && !a.At.Before(since) {
			return a.At
		}
	}
	return time.Time{}
}

// Counts are the writer's answers so far: acknowledged, held, fenced,
// other.
func (w *EdgeWriter) Counts() (acked, held, fenced, other int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.Acked), w.Held, w.Fenced, len(w.Other)
}

// SwitchoverRound is one planned switchover under writes through the
// edge.
type SwitchoverRound struct {
	From, To string
	// ToFirstWrite: from the switchover request to the first write
	// acknowledged at the new home through the edge. ToDone: to the
	// switchover's end (hand-off subscribers streaming from the new home).
	ToFirstWrite, ToDone time.Duration
	// Held writes answered 503 during the round, Fenced refused by the
	// fence (409), Other anything else.
	Held, Fenced, Other int
}

// SwitchoverResult is the planned-switchover measurement.
type SwitchoverResult struct {
	Rounds   []SwitchoverRound
	Interval time.Duration // the writer's pause between writes
	// Acked writes over all rounds, Missing those not found at the final
	// home afterwards (must be 0).
	Acked, Missing int
}

// MeasureSwitchover runs rounds planned switchovers of the tenant under a
// writer writing through the edge, alternating the direction (us-east to
// eu-west, then back: fail-back), and times each from the request to the
// first write acknowledged at the new home.
func MeasureSwitchover(ctx context.Context, f *DataPlaneFed, rounds int, interval time.Duration) (*SwitchoverResult, error) {
	res := &SwitchoverResult{Interval: interval}
	w := f.StartWriter(ctx, DataPlaneTenant, "sw", interval)
	stopped := false
	defer func() {
		if !stopped {
			w.Stop()
		}
	}()
	home, other := "us-east", "eu-west"
	for i := 1; i <= rounds; i++ {
		// Steady writes at the current home, the target streaming.
		since := time.Now()
		if err := eventually(ctx, 60*time.Second, func() error {
			if w.FirstAckedIn(home, since).IsZero() {
				return fmt.Errorf("no write acknowledged at %s through the edge", home)
			}
			return f.MirrorStreams(ctx, other)
		}); err != nil {
			return res, fmt.Errorf("round %d: %w", i, err)
		}
		time.Sleep(500 * time.Millisecond)
		_, held0, fenced0, other0 := w.Counts()
		var st *wire.SwitchoverStatus
		var t0 time.Time
		if err := eventually(ctx, 60*time.Second, func() error {
			api, err := f.API()
			if err != nil {
				return err
			}
			t0 = time.Now()
			st, err = api.StartSwitchover(ctx, DataPlaneTenant, wire.SwitchoverRequest{To: other})
			if client.IsCode(err, "mirror_not_ready") || client.IsCode(err, "mirror_lagging") || client.IsCode(err, fsm.CodeSwitchoverInProgress) ||
				client.IsCode(err, "no_leader") || client.IsCode(err, "busy") {
				return err
			}
			if err != nil {
				return retryNot{err}
			}
			return nil
		}); err != nil {
			return res, fmt.Errorf("round %d: switchover %s -> %s: %w", i, home, other, err)
		}
		r := SwitchoverRound{From: home, To: other}
		if err := eventually(ctx, 60*time.Second, func() error {
			if at := w.FirstAckedIn(other, t0); !at.IsZero() {
				r.ToFirstWrite = at.Sub(t0)
				return nil
			}
			return fmt.Errorf("no write acknowledged at %s", other)
		}); err != nil {
			return res, fmt.Errorf("round %d: %w", i, err)
		}
		if err := eventually(ctx, 60*time.Second, func() error {
			api, err := f.API()
			if err != nil {
				return err
			}
			s, _, err := api.Switchover(ctx, DataPlaneTenant, nil)
			if err != nil {
				return err
			}
			if s.ID != st.ID || s.Active {
				return fmt.Errorf("switchover %d at %s", s.ID, s.Phase)
			}
			if s.Outcome != fsm.PhaseDone {
				return retryNot{fmt.Errorf("switchover %d ended %s: %s", s.ID, s.Outcome, s.Error)}
			}
			if s.EndedAt > 0 && s.StartedAt > 0 {
				r.ToDone = time.Duration(s.EndedAt - s.StartedAt)
			} else {
				r.ToDone = time.Since(t0)
			}
			return nil
		}); err != nil {
			return res, fmt.Errorf("round %d: %w", i, err)
		}
		_, held1, fenced1, other1 := w.Counts()
		r.Held, r.Fenced, r.Other = held1-held0, fenced1-fenced0, other1-other0
		f.Log("switchover round %d %s -> %s: first write at the new home %s after the request, done after %s (%d writes held, %d fenced, %d other)",
			i, home, other, r.ToFirstWrite.Round(time.Millisecond), r.ToDone.Round(time.Millisecond), r.Held, r.Fenced, r.Other)
		res.Rounds = append(res.Rounds, r)
		home, other = other, home
	}
	w.Stop()
	stopped = true
	// Every acknowledged row is at the final home.
	acked := map[int64]bool{}
	for _, a := range w.Acked {
		acked[a.ID] = true
	}
	res.Acked = len(acked)
	conn, err := f.PG[home].Connect(ctx, pglocal.Database)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id FROM orders WHERE tenant_id = $1`, DataPlaneTenant)
	if err != nil {
		return res, err
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return res, err
		}
		delete(acked, id)
	}
	if err := rows.Err(); err != nil {
		return res, err
	}
	res.Missing = len(acked)
	if res.Missing > 0 {
		return res, fmt.Errorf("%d of %d acknowledged writes are not at the final home %s", res.Missing, res.Acked, home)
	}
	return res, nil
}

// retryNot is an error eventually should not retry.
type retryNot struct{ error }
