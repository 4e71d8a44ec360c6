package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// Sources of a region's scrape.
const (
	SourcePrometheus = "prometheus"
	SourceNode       = "node"
)

// NodeJob is the job label given to the series of atomfed nodes' /metrics
// (which carry none of their own); instance is the node's name.
const NodeJob = "atomfed"

// The health series of a region's scrape, one per source, labelled region,
// source and instance.
const (
	MetricScrapeUp       = "atomfed_scrape_up"
	MetricScrapeDuration = "atomfed_scrape_duration_seconds"
	MetricScrapeSeries   = "atomfed_scrape_series"
)

// healthName are the health families the agent adds; a source's own are
// dropped.
var healthName = map[string]bool{MetricScrapeUp: true, MetricScrapeDuration: true, MetricScrapeSeries: true}

// DefaultPromMatch is the match[] an agent federates with when none is
// configured: every series of the region's Prometheus.
var DefaultPromMatch = []string{`{__name__=~".+"}`}

// DefaultMaxSourceBytes bounds the body read from one source.
const DefaultMaxSourceBytes = 256 << 20

// Target is one atomfed node of the region whose /metrics is scraped.
type Target struct {
	Name string // node name: the series' instance label
	URL  string // base URL of its HTTP endpoints
	// Token, when set, is sent as a bearer token (to servers only: a
	// node shows its tenant-labelled series, such as replication lag, only
	// to a token).
	Token string
}

// Scraper collects one region's metrics from inside the region.
type Scraper struct {
	// Region labels every series.
	Region string
	// PromURL is the region's Prometheus (PROM_URL), "" for none;
	// PromMatch its /federate match[] selectors (DefaultPromMatch if none).
	PromURL   string
	PromMatch []string
	// Nodes lists the region's atomfed nodes (servers and agents) to
	// scrape now.
	Nodes func(ctx context.Context) []Target
	// NodeClient returns the client that may scrape the node (under TLS:
	// https only, a certificate naming the node, or naming a server when
	// the target carries a token); an error
	// marks the node down unscraped. nil: Client for every node.
	NodeClient func(t Target) (*http.Client, error)
	// Client carries the nodes' scrapes, PromClient the Prometheus one
	// (nil: Client); they send no credential.
	Client, PromClient *http.Client
	// MaxSourceBytes bounds one source's body (DefaultMaxSourceBytes).
	MaxSourceBytes int64
}

// Scrape collects every source concurrently within ctx and returns the
// merged families, each series labelled with the region, plus the health
// families, and the status of each source. A failing source is reported
// down; the others are kept.
func (s *Scraper) Scrape(ctx context.Context) ([]*dto.MetricFamily, ScrapeStatus) {
	start := time.Now()
	type job struct {
		src      Source
		url      string
		target   []*dto.LabelPair
		families []*dto.MetricFamily
		client   *http.Client
		token    string
		err      error
	}
	var jobs []*job
	if s.PromURL != "" {
		u, inst := federateURL(s.PromURL, s.promMatch())
		c := s.PromClient
		if c == nil {
			c = s.Client
		}
		jobs = append(jobs, &job{src: Source{Source: SourcePrometheus, Instance: inst}, url: u, client: c})
	}
	if s.Nodes != nil {
		nodes := s.Nodes(ctx)
		sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
		for _, n := range nodes {
			j := &job{src: Source{Source: SourceNode, Instance: n.Name}, url: strings.TrimSuffix(n.URL, "/") + "/metrics",
				target: []*dto.LabelPair{label("job", NodeJob), label("instance", n.Name)}, client: s.Client, token: n.Token}
			if s.NodeClient != nil {
				j.client, j.err = s.NodeClient(n)
			}
			jobs = append(jobs, j)
		}
	}
	done := make(chan struct{}, len(jobs))
	for _, j := range jobs {
		go func() {
			defer func() { done <- struct{}{} }()
			if j.err != nil {
				j.src.Error = j.err.Error()
				return
			}
			t0 := time.Now()
			fams, err := s.fetch(ctx, j.client, j.url, j.token)
			j.src.DurationMS = float64(time.Since(t0).Microseconds()) / 1000
			if err != nil {
				j.src.Error = redact(err.Error(), s.PromURL)
				return
			}
			j.src.Up = true
			j.families = fams
		}()
	}
	for range jobs {
		<-done
	}
	merged := newMerger(s.Region)
	st := ScrapeStatus{Sources: make([]Source, 0, len(jobs))}
	for _, j := range jobs {
		j.src.Samples = merged.add(j.families, j.target)
		st.Sources = append(st.Sources, j.src)
	}
	st.ScrapedAt = time.Now()
	st.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	return append(merged.families(), s.healthFamilies(st)...), st
}

func (s *Scraper) promMatch() []string {
	if len(s.PromMatch) == 0 {
		return DefaultPromMatch
	}
	return s.PromMatch
}

// federateURL is PROM_URL's /federate with the match[] selectors, and the
// host:port that names it (never its credentials).
func federateURL(prom string, match []string) (string, string) {
	u, err := url.Parse(strings.TrimSuffix(prom, "/"))
	if err != nil {
		return prom, "prometheus"
	}
	inst := u.Host
	u.Path += "/federate"
	q := u.Query()
	for _, m := range match {
		q.Add("match[]", m)
	}
	u.RawQuery = q.Encode()
	return u.String(), inst
}

// redact removes PROM_URL's credentials from an error message.
func redact(msg, prom string) string {
	if u, err := url.Parse(prom); err == nil && u.User != nil {
		msg = strings.ReplaceAll(msg, u.User.String()+"@", "")
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "<redacted>")
		}
	}
	return msg
}

// ErrSourceTooLarge is a source whose body is over MaxSourceBytes.
var ErrSourceTooLarge = errors.New("the body is over the size limit")

type sourceLimit struct {
	r io.Reader
	n int64
}

func (l *sourceLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, ErrSourceTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// fetch GETs one source (delimited protobuf preferred, text accepted) and
// decodes it with Prometheus' decoders.
func (s *Scraper) fetch(ctx context.Context, c *http.Client, u, token string) ([]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.FmtProtoDelim)+";q=0.9,"+string(expfmt.FmtText)+";q=0.5")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	max := s.MaxSourceBytes
	if max <= 0 {
		max = DefaultMaxSourceBytes
	}
	body := &sourceLimit{r: resp.Body, n: max}
	var out []*dto.MetricFamily
	if expfmt.ResponseFormat(resp.Header).FormatType() == expfmt.TypeProtoDelim {
		br := bufio.NewReader(body)
		opts := protodelim.UnmarshalOptions{MaxSize: max}
		for {
			if _, err := br.Peek(1); err == io.EOF {
				return out, nil
			}
			f := &dto.MetricFamily{}
			if err := opts.UnmarshalFrom(br, f); err != nil {
				return nil, fmt.Errorf("decode: %w", err)
			}
			out = append(out, f)
		}
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(body)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	for _, f := range fams {
		out = append(out, f)
	}
	return out, nil
}

func label(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: proto.String(name), Value: proto.String(value)}
}

// merger merges the families of a region's sources: one family per name
// (a family whose type differs from the first source's is left out), each
// series once, every series labelled region=<region>.
type merger struct {
	region string
	byName map[string]*dto.MetricFamily
	seen   map[string]map[string]bool
}

func newMerger(region string) *merger {
	return &merger{region: region, byName: map[string]*dto.MetricFamily{}, seen: map[string]map[string]bool{}}
}

// add merges fams, adding target labels a series lacks (honor_labels) and
// the region label; it returns the series it kept.
func (m *merger) add(fams []*dto.MetricFamily, target []*dto.LabelPair) int {
	n := 0
	for _, f := range fams {
		name := f.GetName()
		if strings.HasPrefix(name, reservedPrefix) || healthName[name] || !model.LegacyValidation.IsValidMetricName(name) {
			continue
		}
		out := m.byName[name]
		if out == nil {
			out = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type, Unit: f.Unit}
			m.byName[name] = out
			m.seen[name] = map[string]bool{}
		} else if out.GetType() != f.GetType() {
			continue
		}
		for _, s := range f.Metric {
			if s == nil || !hasValue(f.GetType(), s) {
				continue
			}
			s.Label = m.relabel(s.Label, target)
			if s.Label == nil {
				continue
			}
			key := signature(s.Label)
			if m.seen[name][key] {
				continue
			}
			m.seen[name][key] = true
			out.Metric = append(out.Metric, s)
			n++
		}
	}
	return n
}

// relabel returns the series' labels with the target's added where absent
// and region set; a region label of another value becomes exported_region.
// nil when a label is invalid.
func (m *merger) relabel(in, target []*dto.LabelPair) []*dto.LabelPair {
	out := make([]*dto.LabelPair, 0, len(in)+len(target)+1)
	have := map[string]bool{}
	for _, l := range in {
		if l == nil || !model.LegacyValidation.IsValidLabelName(l.GetName()) || have[l.GetName()] {
			return nil
		}
		have[l.GetName()] = true
	}
	for _, l := range in {
		switch l.GetName() {
		case RegionLabel:
			if l.GetValue() != m.region && !have[ExportedRegionLabel] {
				out = append(out, label(ExportedRegionLabel, l.GetValue()))
			}
		default:
			out = append(out, l)
		}
	}
	for _, l := range target {
		if !have[l.GetName()] {
			out = append(out, l)
		}
	}
	out = append(out, label(RegionLabel, m.region))
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func signature(ls []*dto.LabelPair) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.GetName())
		b.WriteByte(0)
		b.WriteString(l.GetValue())
		b.WriteByte(0)
	}
	return b.String()
}

func (m *merger) families() []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, 0, len(m.byName))
	for _, f := range m.byName {
		if len(f.Metric) > 0 {
			out = append(out, f)
		}
	}
	return out
}

func (s *Scraper) healthFamilies(st ScrapeStatus) []*dto.MetricFamily {
	up := &dto.MetricFamily{Name: proto.String(MetricScrapeUp), Type: dto.MetricType_GAUGE.Enum(),
		Help: proto.String("1 when the region's metrics agent could scrape the source, else 0.")}
	dur := &dto.MetricFamily{Name: proto.String(MetricScrapeDuration), Type: dto.MetricType_GAUGE.Enum(),
		Help: proto.String("How long the region's metrics agent took to scrape the source, in seconds.")}
	ser := &dto.MetricFamily{Name: proto.String(MetricScrapeSeries), Type: dto.MetricType_GAUGE.Enum(),
		Help: proto.String("Series the region's metrics agent kept from the source.")}
	for _, src := range st.Sources {
		lbl := []*dto.LabelPair{label("instance", src.Instance), label(RegionLabel, s.Region), label("source", src.Source)}
		v := 0.0
		if src.Up {
			v = 1
		}
		up.Metric = append(up.Metric, &dto.Metric{Label: lbl, Gauge: &dto.Gauge{Value: proto.Float64(v)}})
		dur.Metric = append(dur.Metric, &dto.Metric{Label: lbl, Gauge: &dto.Gauge{Value: proto.Float64(src.DurationMS / 1000)}})
		ser.Metric = append(ser.Metric, &dto.Metric{Label: lbl, Gauge: &dto.Gauge{Value: proto.Float64(float64(src.Samples))}})
	}
	if len(st.Sources) == 0 {
		return nil
	}
	return []*dto.MetricFamily{up, dur, ser}
}
