package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/metrics"
)

// Headers of a metrics push and of a federate answer.
const (
	HeaderTaskGeneration    = "X-Atomfed-Task-Generation"
	HeaderScrape            = "X-Atomfed-Scrape"
	HeaderMissingRegions    = "X-Atomfed-Missing-Regions"
	HeaderIncompleteRegions = "X-Atomfed-Incomplete-Regions"
)

// PushMetrics sends a region's metrics snapshot (metrics.Encode) to this
// server with the generation of the region's metrics task the agent runs.
func (c *Client) PushMetrics(ctx context.Context, region string, generation uint64, st metrics.ScrapeStatus, snapshot []byte) error {
	hdr := http.Header{}
	hdr.Set("Content-Type", string(metrics.SnapshotFormat))
	hdr.Set("Content-Encoding", "gzip")
	hdr.Set(HeaderTaskGeneration, strconv.FormatUint(generation, 10))
	if b, err := json.Marshal(st); err == nil && len(b) <= metrics.MaxScrapeStatusBytes {
		hdr.Set(HeaderScrape, string(b))
	}
	_, err := c.do(ctx, http.MethodPut, "/v1/metrics/regions/"+url.PathEscape(region)+"/snapshot", nil, snapshot, nil, hdr)
	return err
}

// MetricsRegions reads every region's scrape status on this server.
func (c *Client) MetricsRegions(ctx context.Context, maxAge time.Duration) ([]metrics.RegionStatus, error) {
	q := url.Values{}
	if maxAge > 0 {
		q.Set("max_age", maxAge.String())
	}
	var out wire.MetricsRegions
	_, err := c.Do(ctx, http.MethodGet, "/v1/metrics/regions", q, nil, &out)
	return out.Regions, err
}

// FederateOptions are the parameters of GET /v1/metrics/federate.
type FederateOptions struct {
	Match   []string
	Timeout time.Duration // 0: the server's default
	MaxAge  time.Duration // 0: the server's default
	// Accept is the Accept header (empty: Prometheus text).
	Accept string
}

// FederateResult is what the answer's headers say.
type FederateResult struct {
	ContentType string
	Missing     string
	Incomplete  string
}

// Federate streams the global view into w.
func (c *Client) Federate(ctx context.Context, o FederateOptions, w io.Writer) (*FederateResult, error) {
	q := url.Values{"match[]": o.Match}
	if o.Timeout > 0 {
		q.Set("timeout", o.Timeout.String())
	}
	if o.MaxAge > 0 {
		q.Set("max_age", o.MaxAge.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/metrics/federate?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if o.Accept != "" {
		req.Header.Set("Accept", o.Accept)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, decodeError(resp)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return nil, err
	}
	return &FederateResult{ContentType: resp.Header.Get("Content-Type"), Missing: resp.Header.Get(HeaderMissingRegions),
		Incomplete: resp.Trailer.Get(HeaderIncompleteRegions)}, nil
}

// PushMetrics sends a snapshot to every server the pool knows, at once,
// and returns how many accepted it; err joins the others' errors.
func (p *Pool) PushMetrics(ctx context.Context, region string, generation uint64, st metrics.ScrapeStatus, snapshot []byte) (int, error) {
	servers := p.servers()
	if len(servers) == 0 {
		return 0, ErrNoServers
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	ok := 0
	for _, addr := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.client(addr)
			if err == nil {
				err = c.PushMetrics(ctx, region, generation, st, snapshot)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", addr, err))
				return
			}
			ok++
		}()
	}
	wg.Wait()
	return ok, errors.Join(errs...)
}
