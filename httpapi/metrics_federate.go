package httpapi

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/common/expfmt"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	aggr "github.com/atomcloud/atomfed/internal/metrics"
)

// The global metrics view (G.1.5, internal/metrics): agents push their
// region's snapshot to every server, which keeps it in memory (never in
// Raft) and merges the regions on GET /v1/metrics/federate.

// metricsPushers may push a region's snapshot: only agent tokens, bound to
// the region.
var metricsPushers = []string{fsm.RoleAgent}

// Bounds of the federate parameters.
const (
	defaultFederateTimeout = 5 * time.Second
	maxFederateTimeout     = time.Minute
	minFederateTimeout     = 10 * time.Millisecond
	defaultMetricsMaxAge   = 3 * fsm.DefaultMetricsIntervalMS * time.Millisecond
	maxMetricsMaxAge       = time.Hour
)

// putMetricsSnapshot takes a region's snapshot from the agent that holds
// the region's metrics task at its current generation (fencing: an agent
// the task moved away from is refused), checks every series and keeps it.
func (a *API) putMetricsSnapshot(w http.ResponseWriter, r *http.Request) {
	id := identityOf(r)
	region := mux.Vars(r)["region"]
	if err := actsFor(id, region); err != nil {
		writeError(w, err)
		return
	}
	gen, err := strconv.ParseUint(r.Header.Get(client.HeaderTaskGeneration), 10, 64)
	if err != nil || gen == 0 {
		writeError(w, badRequest("bad_generation", "send the generation of the region's metrics task in "+client.HeaderTaskGeneration))
		return
	}
	var task *fsm.Task
	var registered bool
	a.c.FSM().Read(func(s *fsm.State) {
		registered = s.Regions[region] != nil
		task = s.Tasks[fsm.MetricsTaskID(region)]
	})
	switch {
	case !registered:
		writeError(w, notFound("no_such_region", "region "+quote(region)+" is not registered"))
		return
	case task == nil || task.Agent != id.Node || task.Generation != gen:
		writeError(w, &fsm.Error{Kind: fsm.ErrFailedPrecondition, Code: "not_task_holder", Message: fmt.Sprintf(
			"this server's state does not give %s's metrics task at generation %d to agent %s: only the agent that holds the task pushes (the task may have moved, or this server is behind; the next push retries)",
			region, gen, id.Node)})
		return
	}
	if !strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		writeError(w, badRequest("bad_snapshot", "send the snapshot gzip-compressed, with Content-Encoding: gzip"))
		return
	}
	var st aggr.ScrapeStatus
	if h := r.Header.Get(client.HeaderScrape); h != "" {
		if len(h) > aggr.MaxScrapeStatusBytes || json.Unmarshal([]byte(h), &st) != nil {
			writeError(w, badRequest("bad_scrape_status", client.HeaderScrape+" must be a JSON scrape status of at most 16 KiB"))
			return
		}
	}
	lim := aggr.DefaultLimits()
	body, err := readBody(w, r, lim.MaxCompressedBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	info, err := aggr.Inspect(body, region, lim)
	switch {
	case errors.Is(err, aggr.ErrForeignRegion):
		writeError(w, forbidden("foreign_region", err.Error()))
		return
	case err != nil:
		writeError(w, badRequest("bad_snapshot", err.Error()))
		return
	}
	if err := a.metricsStore.Put(aggr.NewSnapshot(region, id.Node, gen, a.now(), st, info, body)); err != nil {
		writeError(w, &fsm.Error{Kind: fsm.ErrFailedPrecondition, Code: "not_task_holder", Message: err.Error()})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// MetricsStore is the server's store of region metrics snapshots (for the
// remote writer).
func (a *API) MetricsStore() *aggr.Store { return a.metricsStore }

// registeredRegions lists the registered regions from this server's state.
func (a *API) registeredRegions() []string {
	var out []string
	a.c.FSM().Read(func(s *fsm.State) {
		for _, r := range s.SortedRegions() {
			out = append(out, r.Name)
		}
	})
	return out
}

// metricsRegions answers every region's scrape status on this server.
func (a *API) metricsRegions(w http.ResponseWriter, r *http.Request) {
	maxAge, err := durationParam(r, "max_age", defaultMetricsMaxAge, time.Second, maxMetricsMaxAge)
	if err != nil {
		writeError(w, err)
		return
	}
	regions := a.registeredRegions()
	snaps := a.metricsStore.Snapshots(regions)
	writeJSON(w, http.StatusOK, wire.MetricsRegions{Regions: aggr.Statuses(regions, snaps, a.now(), maxAge), MaxAgeSeconds: maxAge.Seconds()})
}

// metricsFederate answers the global view: Prometheus /federate's match[]
// and formats, every region merged, within the deadline. Regions without a
// fresh snapshot are named in X-Atomfed-Missing-Regions; regions cut by the
// deadline in the X-Atomfed-Incomplete-Regions trailer; both in
// atomfed_region_scrape_up.
func (a *API) metricsFederate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sel, err := aggr.ParseSelectors(q["match[]"])
	if err != nil {
		writeError(w, badRequest("bad_match", err.Error()))
		return
	}
	def := defaultFederateTimeout
	if h := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); h != "" && q.Get("timeout") == "" {
		if s, err := strconv.ParseFloat(h, 64); err == nil && s > 0 {
			def = min(max(time.Duration(s*float64(time.Second))*9/10, minFederateTimeout), maxFederateTimeout)
		}
	}
	timeout, err := durationParam(r, "timeout", def, minFederateTimeout, maxFederateTimeout)
	if err != nil {
		writeError(w, err)
		return
	}
	maxAge, err := durationParam(r, "max_age", defaultMetricsMaxAge, time.Second, maxMetricsMaxAge)
	if err != nil {
		writeError(w, err)
		return
	}
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	// A slow reader cannot hold the answer past the deadline either.
	_ = http.NewResponseController(w).SetWriteDeadline(deadline.Add(time.Second))
	regions := a.registeredRegions()
	plan := aggr.NewPlan(regions, a.metricsStore.Snapshots(regions), a.now(), maxAge)
	format := expfmt.NegotiateAccept(r.Header, expfmt.FmtText, expfmt.FmtOpenMetrics_1_0_0, expfmt.FmtOpenMetrics_0_0_1)
	h := w.Header()
	h.Set("Content-Type", string(format))
	h.Set(client.HeaderMissingRegions, strings.Join(plan.Missing, ","))
	h.Set("Trailer", client.HeaderIncompleteRegions)
	out := bufio.NewWriterSize(w, 64<<10)
	var zw *gzip.Writer
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		h.Add("Vary", "Accept-Encoding")
		zw, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		out = bufio.NewWriterSize(zw, 64<<10)
	}
	w.WriteHeader(http.StatusOK)
	res, err := aggr.Write(ctx, out, format, plan, sel)
	if err == nil {
		err = out.Flush()
	}
	if err == nil && zw != nil {
		err = zw.Close()
	}
	if err != nil {
		a.log.Debug("federate answer cut", "error", err)
		return
	}
	h.Set(client.HeaderIncompleteRegions, strings.Join(res.Incomplete, ","))
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if strings.TrimSpace(strings.SplitN(part, ";", 2)[0]) == "gzip" {
			return true
		}
	}
	return false
}

// durationParam reads a duration parameter ("5s", or seconds as a number,
// as Prometheus writes them) within [lo, hi].
func durationParam(r *http.Request, name string, def, lo, hi time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		s, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil {
			return 0, badRequest("bad_"+name, fmt.Sprintf("%s=%q is not a duration: give e.g. %s=5s", name, v, name))
		}
		d = time.Duration(s * float64(time.Second))
	}
	if d < lo || d > hi {
		return 0, badRequest("bad_"+name, fmt.Sprintf("%s=%s is out of range: give a duration between %s and %s", name, v, lo, hi))
	}
	return d, nil
}
