package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

func gauge(name string, v float64, lbls ...string) *dto.MetricFamily {
	f := &dto.MetricFamily{Name: proto.String(name), Type: dto.MetricType_GAUGE.Enum()}
	m := &dto.Metric{Gauge: &dto.Gauge{Value: proto.Float64(v)}}
	for i := 0; i+1 < len(lbls); i += 2 {
		m.Label = append(m.Label, label(lbls[i], lbls[i+1]))
	}
	f.Metric = append(f.Metric, m)
	return f
}

func snapshot(t testing.TB, fams ...*dto.MetricFamily) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Encode(&b, fams); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func put(t testing.TB, st *Store, region string, gen uint64, at time.Time, data []byte) {
	t.Helper()
	info, err := Inspect(data, region, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(NewSnapshot(region, region+"-a1", gen, at, ScrapeStatus{}, info, data)); err != nil {
		t.Fatal(err)
	}
}

func federate(t testing.TB, ctx context.Context, st *Store, regions []string, now time.Time, format expfmt.Format, match ...string) (string, *Plan, Result) {
	t.Helper()
	sel, err := ParseSelectors(match)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPlan(regions, st.Snapshots(regions), now, 15*time.Second)
	var b bytes.Buffer
	res, err := Write(ctx, &b, format, p, sel)
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), p, res
}

// TestFederateMergesRegionsAndNamesTheMissing: families of every fresh
// region are merged once each and sorted, match[] selects as Prometheus
// does, a stale and an absent region are named and marked down, and the
// answer parses with Prometheus' own parser.
func TestFederateMergesRegionsAndNamesTheMissing(t *testing.T) {
	now := time.Now()
	st := NewStore()
	put(t, st, "us-east", 1, now.Add(-time.Second), snapshot(t,
		gauge("up", 1, "instance", "a", "job", "node", "region", "us-east"),
		gauge("atomfed_x", 3, "region", "us-east"),
	))
	put(t, st, "eu-west", 1, now.Add(-2*time.Second), snapshot(t,
		gauge("up", 0, "instance", "b", "job", "node", "region", "eu-west"),
		gauge("other", 7, "region", "eu-west"),
	))
	put(t, st, "ap-south", 1, now.Add(-time.Minute), snapshot(t, gauge("up", 1, "region", "ap-south")))
	regions := []string{"us-east", "eu-west", "ap-south", "sa-east"}
	out, p, res := federate(t, context.Background(), st, regions, now, expfmt.FmtText, `up`, `{__name__="atomfed_x"}`)
	if got := strings.Join(p.Missing, ","); got != "ap-south,sa-east" {
		t.Fatalf("missing %q", got)
	}
	if len(res.Incomplete) != 0 || res.Series != 3 {
		t.Fatalf("result %+v\n%s", res, out)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		t.Fatalf("answer does not parse: %v\n%s", err, out)
	}
	if n := len(fams["up"].GetMetric()); n != 2 {
		t.Fatalf("up has %d series, want us-east and eu-west's:\n%s", n, out)
	}
	if fams["other"] != nil {
		t.Fatalf("unselected family written:\n%s", out)
	}
	for _, want := range []string{`atomfed_region_scrape_up{region="ap-south"} 0`, `atomfed_region_scrape_up{region="sa-east"} 0`,
		`atomfed_region_scrape_up{region="us-east"} 1`, `atomfed_region_scrape_age_seconds{region="ap-south"} 60`} {
		if !strings.Contains(out, want) {
			t.Fatalf("answer lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, `sa-east"} `) && strings.Contains(out, `atomfed_region_scrape_age_seconds{region="sa-east"}`) {
		t.Fatalf("an age for a region never scraped:\n%s", out)
	}
	// OpenMetrics: the same, ending with # EOF.
	om, _, _ := federate(t, context.Background(), st, regions, now, expfmt.FmtOpenMetrics_1_0_0, `{job="node"}`)
	if !strings.HasSuffix(om, "# EOF\n") || !strings.Contains(om, `up{instance="a",job="node",region="us-east"} 1.0`) {
		t.Fatalf("openmetrics answer:\n%s", om)
	}
}

// TestFederateStopsAtTheDeadline: past the deadline the merge stops and
// names the unfinished regions; the health series still come.
func TestFederateStopsAtTheDeadline(t *testing.T) {
	now := time.Now()
	st := NewStore()
	put(t, st, "us-east", 1, now, snapshot(t, gauge("a", 1, "region", "us-east"), gauge("b", 1, "region", "us-east")))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out, _, res := federate(t, ctx, st, []string{"us-east"}, now, expfmt.FmtText, `{__name__=~".+"}`)
	if strings.Join(res.Incomplete, ",") != "us-east" || !strings.Contains(out, `atomfed_region_scrape_up{region="us-east"} 0`) {
		t.Fatalf("result %+v\n%s", res, out)
	}
}

// TestInspectRefuses: what a server refuses from an agent.
func TestInspectRefuses(t *testing.T) {
	lim := DefaultLimits()
	cases := map[string][]byte{
		"foreign region":   snapshot(t, gauge("a", 1, "region", "eu-west")),
		"no region label":  snapshot(t, gauge("a", 1, "job", "x")),
		"reserved family":  snapshot(t, gauge(MetricRegionUp, 1, "region", "us-east")),
		"not gzip":         []byte("up 1\n"),
		"bad metric name":  snapshot(t, gauge("a-b", 1, "region", "us-east")),
		"type mismatch":    snapshot(t, &dto.MetricFamily{Name: proto.String("c"), Type: dto.MetricType_COUNTER.Enum(), Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("region", "us-east")}, Gauge: &dto.Gauge{Value: proto.Float64(1)}}}}),
		"repeated label":   snapshot(t, gauge("a", 1, "region", "us-east", "region", "us-east")),
		"truncated gzip":   snapshot(t, gauge("a", 1, "region", "us-east"))[:20],
		"duplicate family": dupFamilies(t),
	}
	for name, data := range cases {
		if _, err := Inspect(data, "us-east", lim); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
	if _, err := Inspect(cases["foreign region"], "us-east", lim); !errors.Is(err, ErrForeignRegion) {
		t.Errorf("foreign region: %v", err)
	}
	small := lim
	small.MaxSeries = 1
	if _, err := Inspect(snapshot(t, gauge("a", 1, "region", "us-east"), gauge("b", 1, "region", "us-east")), "us-east", small); err == nil {
		t.Error("over MaxSeries accepted")
	}
	small = lim
	small.MaxDecodedBytes = 10
	if _, err := Inspect(snapshot(t, gauge("a", 1, "region", "us-east", "job", strings.Repeat("x", 100))), "us-east", small); err == nil {
		t.Error("over MaxDecodedBytes accepted")
	}
}

func dupFamilies(t *testing.T) []byte {
	// Encode sorts; write two families of one name by hand.
	var b bytes.Buffer
	if err := Encode(&b, []*dto.MetricFamily{gauge("a", 1, "region", "us-east"), gauge("a", 2, "region", "us-east", "x", "y")}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestStoreFencesOlderGenerations: a push of an older generation than the
// one kept is refused; regions no longer registered are forgotten.
func TestStoreFencesOlderGenerations(t *testing.T) {
	st := NewStore()
	data := snapshot(t, gauge("a", 1, "region", "us-east"))
	put(t, st, "us-east", 5, time.Now(), data)
	info, _ := Inspect(data, "us-east", DefaultLimits())
	if err := st.Put(NewSnapshot("us-east", "old", 4, time.Now(), ScrapeStatus{}, info, data)); !errors.Is(err, ErrOlderGeneration) {
		t.Fatalf("older generation: %v", err)
	}
	if len(st.Snapshots([]string{"eu-west"})) != 0 || len(st.Snapshots([]string{"us-east"})) != 0 {
		t.Fatal("an unregistered region's snapshot was kept")
	}
}

// TestSelectors: Prometheus' syntax, and clear errors.
func TestSelectors(t *testing.T) {
	for _, bad := range [][]string{nil, {`{`}, {`{job=~""}`}, {strings.Repeat("a", MaxSelectorLen+1)}, make([]string, MaxSelectors+1)} {
		if _, err := ParseSelectors(bad); err == nil {
			t.Errorf("%.40q accepted", bad)
		}
	}
	sel, err := ParseSelectors([]string{`up{job!="x"}`, `{region=~"eu-.*"}`})
	if err != nil {
		t.Fatal(err)
	}
	m := func(lbls ...string) *dto.Metric { return gauge("n", 1, lbls...).Metric[0] }
	for _, c := range []struct {
		name string
		m    *dto.Metric
		want bool
	}{
		{"up", m("job", "y"), true},
		{"up", m("job", "x"), false},
		{"up", m(), true}, // a missing label is ""
		{"foo", m("region", "eu-west"), true},
		{"foo", m("region", "us-east"), false},
	} {
		if got := sel.ForName(c.name).Matches(c.m); got != c.want {
			t.Errorf("%s%v: %v, want %v", c.name, c.m.Label, got, c.want)
		}
	}
}

// TestScraperLabelsAndBounds: a Prometheus /federate in text and a node in
// delimited protobuf are merged with region labels (existing labels kept;
// a foreign region label becomes exported_region; job/instance only where
// absent); garbage and an endless body mark their source down and keep
// the rest.
func TestScraperLabelsAndBounds(t *testing.T) {
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/federate" || r.URL.Query()["match[]"][0] != `{job="node"}` {
			http.Error(w, "bad", 400)
			return
		}
		w.Header().Set("Content-Type", string(expfmt.FmtText))
		fmt.Fprint(w, "# TYPE up untyped\nup{instance=\"h:9100\",job=\"node\"} 1 1700000000000\nup{instance=\"h2:9100\",job=\"node\",region=\"elsewhere\"} 0\n")
	}))
	defer prom.Close()
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", string(expfmt.FmtProtoDelim))
		enc := expfmt.NewEncoder(w, expfmt.FmtProtoDelim)
		_ = enc.Encode(gauge("atomfed_raft_state", 1, "state", "leader"))
	}))
	defer node.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "{{{ not metrics") }))
	defer garbage.Close()
	endless := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; r.Context().Err() == nil; i++ {
			if _, err := fmt.Fprintf(w, "m%d 1\n", i); err != nil {
				return
			}
		}
	}))
	defer endless.Close()
	s := &Scraper{Region: "us-east", PromURL: prom.URL, PromMatch: []string{`{job="node"}`}, MaxSourceBytes: 1 << 20,
		Nodes: func(context.Context) []Target {
			return []Target{{Name: "n1", URL: node.URL}, {Name: "n2", URL: garbage.URL}, {Name: "n3", URL: endless.URL}}
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fams, st := s.Scrape(ctx)
	up := map[string]bool{}
	for _, src := range st.Sources {
		up[src.Instance] = src.Up
	}
	if !up["n1"] || up["n2"] || up["n3"] || len(up) != 4 {
		t.Fatalf("sources %+v", st.Sources)
	}
	data := snapshot(t, fams...)
	if _, err := Inspect(data, "us-east", DefaultLimits()); err != nil {
		t.Fatalf("the agent's own snapshot is refused: %v", err)
	}
	store := NewStore()
	put(t, store, "us-east", 1, time.Now(), data)
	out, _, _ := federate(t, context.Background(), store, []string{"us-east"}, time.Now(), expfmt.FmtText, `{__name__=~"up|atomfed_raft_state|atomfed_scrape_up"}`)
	for _, want := range []string{
		`up{instance="h:9100",job="node",region="us-east"} 1 1700000000000`,
		`up{exported_region="elsewhere",instance="h2:9100",job="node",region="us-east"} 0`,
		`atomfed_raft_state{instance="n1",job="atomfed",region="us-east",state="leader"} 1`,
		`atomfed_scrape_up{instance="n3",region="us-east",source="node"} 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("answer lacks %s:\n%s", want, out)
		}
	}
}

func counter(name string, v float64, lbls ...string) *dto.MetricFamily {
	f := gauge(name, 0, lbls...)
	f.Type = dto.MetricType_COUNTER.Enum()
	f.Metric[0].Gauge, f.Metric[0].Counter = nil, &dto.Counter{Value: proto.Float64(v)}
	return f
}

// TestSummaries: /global-status' per-region line: request and error rates
// between a region's last two snapshots, its mirrors' lag p99, and what is
// stale or unknown.
func TestSummaries(t *testing.T) {
	now := time.Now()
	reqs := func(ok, failed float64) *dto.MetricFamily {
		f := counter("atomfed_http_requests_total", ok, "code", "200", "region", "us-east")
		f.Metric = append(f.Metric, counter("x", failed, "code", "503", "region", "us-east").Metric[0])
		return f
	}
	lag := gauge("atomfed_replication_lag_seconds", 0.2, "mirror", "us-east", "region", "us-east", "tenant", "a")
	lag.Metric = append(lag.Metric,
		gauge("x", 3, "mirror", "us-east", "region", "us-east", "tenant", "b").Metric[0],
		gauge("x", 9, "mirror", "eu-west", "region", "us-east", "tenant", "c").Metric[0])
	st := NewStore()
	put(t, st, "us-east", 1, now.Add(-10*time.Second), snapshot(t, reqs(100, 10), lag))
	put(t, st, "us-east", 1, now.Add(-5*time.Second), snapshot(t, reqs(150, 20), lag))
	put(t, st, "eu-west", 1, now.Add(-time.Hour), snapshot(t, gauge("a", 1, "region", "eu-west")))
	got := Summaries([]string{"us-east", "eu-west", "ap-south"}, st.Snapshots([]string{"us-east", "eu-west", "ap-south"}), now, 15*time.Second)
	if len(got) != 3 {
		t.Fatalf("%+v", got)
	}
	ap, eu, us := got[0], got[1], got[2]
	if us.Scrape != "ok" || us.RequestsPerSecond == nil || *us.RequestsPerSecond != 12 || *us.ErrorsPerSecond != 2 ||
		us.ReplicationLagP99Seconds == nil || *us.ReplicationLagP99Seconds != 3 || len(us.Stale) != 0 {
		t.Errorf("us-east %+v", us)
	}
	if eu.Scrape != "stale" || strings.Join(eu.Stale, ",") != "errors_per_second,replication_lag_p99_seconds,requests_per_second" {
		t.Errorf("eu-west %+v", eu)
	}
	if ap.Scrape != "missing" || ap.AgeSeconds != nil || len(ap.Stale) != 3 {
		t.Errorf("ap-south %+v", ap)
	}
}
