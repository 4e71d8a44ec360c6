package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/procs"
)

// BlockingOptions configure RunBlocking.
type BlockingOptions struct {
	// Bin is the atomfed binary; the phase starts its own three servers
	// with default flags (so the default caps on blocking queries).
	Bin string
	// Watchers is how many blocking queries are held open on the leader.
	Watchers int
	// Tokens is how many reader tokens the watchers spread over (the
	// per-token cap must allow Watchers/Tokens each).
	Tokens int
	// HealthRequests is how many GET /health are timed per round, one at
	// a time over one keep-alive connection.
	HealthRequests int
	// Rounds of HealthRequests, each with a fresh set of watchers; the
	// report shows the medians.
	Rounds int
	// WriteEvery is the pace of a tenant writer that runs while /health
	// is timed, so that the state changes under the held queries (none of
	// which watches the tenants). 0: no writer.
	WriteEvery time.Duration
	Log        func(format string, a ...any)
}

// errNoGauge is a server without atomfed_http_blocking_queries (older
// than the caps on blocking queries).
var errNoGauge = errors.New("no atomfed_http_blocking_queries on /metrics")

// BlockingRound is one round's figures.
type BlockingRound struct {
	Held           int // blocking queries the leader reported holding (sent, on a server without the gauge)
	P50, P99, Max  time.Duration
	OK, Errors     int
	Writes         int // tenant writes committed while /health was timed
	WatcherAnswers int // blocking queries that returned early (should be 0)
}

// BlockingResult is the phase's outcome.
type BlockingResult struct {
	Watchers, Tokens, HealthRequests int
	WriteEvery                       time.Duration
	Rounds                           []BlockingRound
	// Version is what the servers report in /health.
	Version string
}

// Medians returns the median p50, p99 and max of the rounds.
func (r *BlockingResult) Medians() (p50, p99, max time.Duration) {
	var a, b, c []time.Duration
	for _, x := range r.Rounds {
		a, b, c = append(a, x.P50), append(b, x.P99), append(c, x.Max)
	}
	return Median(a), Median(b), Median(c)
}

// RunBlocking measures GET /health on the leader of a real three-server
// TLS cluster while Watchers blocking queries (GET
// /v1/agents/{node}/tasks?index=&wait=10m, each on its own connection,
// spread over Tokens reader tokens) are held open on it and a writer
// changes tenants.
func RunBlocking(ctx context.Context, o BlockingOptions) (*BlockingResult, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	// Each watcher is a connection here and one on the leader. Go raises
	// the soft open-file limit to the hard one at start; the servers,
	// Go processes too, get the same.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(o.Watchers)+1024 {
		return nil, fmt.Errorf("the open-file limit is %d, too low for %d blocking queries: raise ulimit -n to at least %d", lim.Cur, o.Watchers, o.Watchers+1024)
	}
	c, err := procs.StartCluster(procs.ClusterOptions{Bin: o.Bin, Servers: 3})
	if err != nil {
		return nil, err
	}
	defer c.Remove(false)
	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		return nil, err
	}
	rc, err := c.Sec.SigningClient(leader.URL, "bench")
	if err != nil {
		return nil, err
	}
	if _, err := rc.RegisterRegion(ctx, &fsm.Region{Name: "bench", URL: "http://127.0.0.1:1"}, nil); err != nil {
		return nil, fmt.Errorf("register region: %w", err)
	}
	var tokens []string
	for i := range o.Tokens {
		tok, err := leader.Client.CreateToken(ctx, fsm.RoleReader, fmt.Sprintf("bench watcher %d", i))
		if err != nil {
			return nil, fmt.Errorf("create token: %w", err)
		}
		tokens = append(tokens, tok.Secret)
	}
	res := &BlockingResult{Watchers: o.Watchers, Tokens: o.Tokens, HealthRequests: o.HealthRequests, WriteEvery: o.WriteEvery}
	if h, err := leader.Health(ctx); err == nil {
		res.Version = h.Version
	}
	for round := 1; round <= o.Rounds && ctx.Err() == nil; round++ {
		r, err := blockingRound(ctx, c, leader, tokens, o, round)
		if err != nil {
			return res, fmt.Errorf("round %d: %w", round, err)
		}
		o.Log("blocking: round %d: %d held; GET /health p50 %s p99 %s max %s (%d ok, %d errors); %d tenant writes; %d watchers answered early",
			round, r.Held, fmtDur(r.P50), fmtDur(r.P99), fmtDur(r.Max), r.OK, r.Errors, r.Writes, r.WatcherAnswers)
		res.Rounds = append(res.Rounds, r)
	}
	return res, ctx.Err()
}

func blockingRound(ctx context.Context, c *procs.Cluster, leader *procs.ServerProc, tokens []string, o BlockingOptions, round int) (BlockingRound, error) {
	var r BlockingRound
	tlsCfg := c.Sec.TLSConfig()
	// One connection per watcher, as separate clients would have.
	watchTr := &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: -1, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext, TLSHandshakeTimeout: 30 * time.Second}
	defer watchTr.CloseIdleConnections()
	wc := &http.Client{Transport: watchTr}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var early, failed, wrote atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	// Dial in bounded batches so that the handshakes do not time out.
	sem := make(chan struct{}, 64)
	for i := range o.Watchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("%s/v1/agents/bench-watcher-%d-%d/tasks?index=1&wait=10m", leader.URL, round, i)
			req, _ := http.NewRequestWithContext(wctx, http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+tokens[i%len(tokens)])
			sem <- struct{}{}
			var once sync.Once
			release := func() { once.Do(func() { <-sem }) }
			defer release()
			// The connection is up once the request is written; the
			// answer comes only when the query ends.
			req = req.WithContext(httptrace.WithClientTrace(wctx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Add(1); release() }}))
			resp, err := wc.Do(req)
			if err != nil {
				if wctx.Err() == nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if wctx.Err() == nil {
				early.Add(1)
				if resp.StatusCode != http.StatusOK {
					firstErr.CompareAndSwap(nil, fmt.Sprintf("HTTP %d", resp.StatusCode))
				}
			}
		}()
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 2}}
	defer hc.CloseIdleConnections()
	gauge := func() (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, leader.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+procs.Token)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "atomfed_http_blocking_queries "); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				return int(f), err
			}
		}
		return 0, errNoGauge
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n, err := gauge()
		if err == nil && n >= o.Watchers {
			r.Held = n
			break
		}
		if errors.Is(err, errNoGauge) && wrote.Load() >= int64(o.Watchers) {
			// A server from before the gauge (a baseline run): every
			// query was sent; give the server a moment to take them.
			time.Sleep(2 * time.Second)
			r.Held = int(wrote.Load())
			break
		}
		if f := failed.Load() + early.Load(); f > 0 {
			return r, fmt.Errorf("%d of %d blocking queries failed or returned early (first: %v)", f, o.Watchers, firstErr.Load())
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("only %d of %d blocking queries held after 2 minutes (%v)", n, o.Watchers, err)
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}

	// The writer changes tenants while /health is timed.
	var writes atomic.Int64
	wdone := make(chan struct{})
	hctx, hstop := context.WithCancel(ctx)
	go func() {
		defer close(wdone)
		if o.WriteEvery <= 0 {
			return
		}
		t := time.NewTicker(o.WriteEvery)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
			}
			if _, err := leader.Client.PutTenant(hctx, &fsm.Tenant{ID: fmt.Sprintf("blocking-%d-%d", round, i%100), HomeRegion: "bench"}, nil); err == nil {
				writes.Add(1)
			}
		}
	}()
	lats := make([]time.Duration, 0, o.HealthRequests)
	for range o.HealthRequests {
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, leader.URL+"/health", nil)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			r.Errors++
			continue
		}
		lats = append(lats, time.Since(start))
	}
	hstop()
	<-wdone
	r.Writes = int(writes.Load())
	r.WatcherAnswers = int(early.Load())
	r.OK = len(lats)
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	if len(lats) > 0 {
		r.P50, r.P99, r.Max = Percentile(lats, 50), Percentile(lats, 99), lats[len(lats)-1]
	}
	stop()
	wg.Wait()
	return r, nil
}
