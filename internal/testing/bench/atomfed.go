package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Atomfed builds load-generator operations against an atomfed cluster's
// HTTP API: tenant upserts and tenant reads.
type Atomfed struct {
	HTTP *HTTP
	// Targets are server base URLs. Operation seq of client i goes to
	// Targets[(i+seq) % len(Targets)], so that even one client spreads its
	// requests over every target.
	Targets []string
	// Keys is the number of distinct tenant ids writes spread over; reads
	// use the first ReadKeys of them (see Populate).
	Keys, ReadKeys int

	ids  []string
	body []byte
}

// NewAtomfed returns operations on tenants homed in region, each written
// with a label value of labelBytes bytes.
func NewAtomfed(h *HTTP, targets []string, region string, keys, readKeys, labelBytes int) (*Atomfed, error) {
	if keys < 1 || readKeys < 1 || readKeys > keys {
		return nil, fmt.Errorf("need 1 <= read keys (%d) <= keys (%d)", readKeys, keys)
	}
	a := &Atomfed{HTTP: h, Targets: targets, Keys: keys, ReadKeys: readKeys, ids: make([]string, keys)}
	for i := range a.ids {
		a.ids[i] = fmt.Sprintf("t-%06d", i)
	}
	payload := strings.Repeat("0123456789abcdef", labelBytes/16+1)[:labelBytes]
	body, err := json.Marshal(map[string]any{"home_region": region, "labels": map[string]string{"payload": payload}})
	if err != nil {
		return nil, err
	}
	a.body = body
	return a, nil
}

// BodySize is the size of one upsert's request body.
func (a *Atomfed) BodySize() int { return len(a.body) }

// mix spreads (client, seq) over the key space (splitmix64).
func mix(client int, seq uint64) uint64 {
	z := uint64(client)<<40 ^ seq
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (a *Atomfed) target(client int, seq uint64) string {
	return a.Targets[(uint64(client)+seq)%uint64(len(a.Targets))]
}

// Upsert is an Op: PUT /v1/tenants/{id} with the fixed body, over Keys ids.
func (a *Atomfed) Upsert(ctx context.Context, client int, seq uint64) error {
	id := a.ids[mix(client, seq)%uint64(a.Keys)]
	return a.HTTP.Do(ctx, http.MethodPut, a.target(client, seq)+"/v1/tenants/"+id, a.body)
}

// Read returns an Op that reads one of the first ReadKeys tenants with the
// given consistency ("" for the server default, which is linearizable).
func (a *Atomfed) Read(consistency string) Op {
	q := ""
	if consistency != "" {
		q = "?consistency=" + consistency
	}
	return func(ctx context.Context, client int, seq uint64) error {
		id := a.ids[mix(client, seq)%uint64(a.ReadKeys)]
		return a.HTTP.Do(ctx, http.MethodGet, a.target(client, seq)+"/v1/tenants/"+id+q, nil)
	}
}

// Populate writes the first ReadKeys tenants with conc clients, so that
// every read finds its tenant.
func (a *Atomfed) Populate(ctx context.Context, conc int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, conc)
	for c := 0; c < conc; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(a.ReadKeys) {
					return
				}
				url := a.Targets[int(i)%len(a.Targets)] + "/v1/tenants/" + a.ids[i]
				if err := a.HTTP.Do(ctx, http.MethodPut, url, a.body); err != nil {
					errs[c] = fmt.Errorf("populate %s: %w", a.ids[i], err)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
