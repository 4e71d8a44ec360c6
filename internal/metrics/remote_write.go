package metrics

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/golang/snappy"
	"github.com/hashicorp/go-hclog"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
)

// RemoteWriter sends the fresh snapshots a server holds to a Prometheus
// remote-write endpoint (remote write 1.0: a snappy-compressed protobuf
// WriteRequest per region and snapshot), so that a global Prometheus or
// Mimir stores the view without scraping it. Samples carry the region's
// scrape time (the same on every server: several servers writing the same
// snapshot send identical samples, which the receiver takes once). One
// region's series are held at a time.
type RemoteWriter struct {
	URL      string
	Client   *http.Client
	Store    *Store
	Regions  func() []string
	Interval time.Duration
	MaxAge   time.Duration
	Logger   hclog.Logger

	sent map[string]time.Time // region -> Received of the snapshot sent
}

// Run writes every interval until ctx ends.
func (w *RemoteWriter) Run(ctx context.Context) {
	if w.Logger == nil {
		w.Logger = hclog.NewNullLogger()
	}
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.Once(ctx); err != nil {
			w.Logger.Warn("remote write failed; retrying at the next interval", "error", err)
		}
	}
}

// Once sends each region's fresh snapshot not sent yet.
func (w *RemoteWriter) Once(ctx context.Context) error {
	if w.sent == nil {
		w.sent = map[string]time.Time{}
	}
	regions := w.Regions()
	p := NewPlan(regions, w.Store.Snapshots(regions), time.Now(), w.MaxAge)
	var errs []error
	for _, r := range p.Regions {
		s := p.Fresh[r]
		if s == nil || w.sent[r].Equal(s.Received) {
			continue
		}
		body, n, err := WriteRequest(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r, err))
			continue
		}
		if n == 0 {
			w.sent[r] = s.Received
			continue
		}
		if err := w.post(ctx, body); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r, err))
			continue
		}
		w.sent[r] = s.Received
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

func (w *RemoteWriter) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.Interval)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(snappy.Encode(nil, body)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	c := w.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// WriteRequest encodes a snapshot as a remote-write WriteRequest (before
// snappy) and returns it with its number of series: counters, gauges and
// untyped values as themselves, summaries as quantiles, _sum and _count,
// histograms as _bucket{le}, _sum and _count. A sample without a
// timestamp takes the snapshot's scrape time.
func WriteRequest(s *Snapshot) ([]byte, int, error) {
	r, err := newFamilyReader(s.data, DefaultLimits())
	if err != nil {
		return nil, 0, err
	}
	def := s.Scrape.ScrapedAt
	if def.IsZero() {
		def = s.Received
	}
	var out []byte
	n := 0
	for {
		f := &dto.MetricFamily{}
		err := r.next(f)
		if err == io.EOF {
			return out, n, nil
		}
		if err != nil {
			return nil, 0, err
		}
		name := f.GetName()
		for _, m := range f.Metric {
			ts := def.UnixMilli()
			if m.TimestampMs != nil {
				ts = m.GetTimestampMs()
			}
			add := func(suffix string, v float64, extra ...string) {
				out = appendSeries(out, name+suffix, m.Label, extra, v, ts)
				n++
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add("", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add("", m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add("", m.GetUntyped().GetValue())
			case dto.MetricType_SUMMARY:
				for _, q := range m.GetSummary().GetQuantile() {
					add("", q.GetValue(), "quantile", formatFloat(q.GetQuantile()))
				}
				add("_sum", m.GetSummary().GetSampleSum())
				add("_count", float64(m.GetSummary().GetSampleCount()))
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				inf := false
				for _, b := range h.GetBucket() {
					inf = inf || math.IsInf(b.GetUpperBound(), 1)
					add("_bucket", float64(b.GetCumulativeCount()), "le", formatFloat(b.GetUpperBound()))
				}
				if !inf {
					add("_bucket", float64(h.GetSampleCount()), "le", "+Inf")
				}
				add("_sum", h.GetSampleSum())
				add("_count", float64(h.GetSampleCount()))
			}
		}
	}
}

func formatFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// appendSeries appends one TimeSeries (field 1 of WriteRequest) with its
// labels sorted by name, __name__ included, and one sample.
func appendSeries(out []byte, name string, lbls []*dto.LabelPair, extra []string, v float64, ts int64) []byte {
	type kv struct{ k, v string }
	all := make([]kv, 0, len(lbls)+2)
	all = append(all, kv{"__name__", name})
	for _, l := range lbls {
		all = append(all, kv{l.GetName(), l.GetValue()})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		all = append(all, kv{extra[i], extra[i+1]})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].k < all[j].k })
	var series []byte
	for _, l := range all {
		var lb []byte
		lb = protowire.AppendTag(lb, 1, protowire.BytesType)
		lb = protowire.AppendString(lb, l.k)
		lb = protowire.AppendTag(lb, 2, protowire.BytesType)
		lb = protowire.AppendString(lb, l.v)
		series = protowire.AppendTag(series, 1, protowire.BytesType)
		series = protowire.AppendBytes(series, lb)
	}
	var sb []byte
	sb = protowire.AppendTag(sb, 1, protowire.Fixed64Type)
	sb = protowire.AppendFixed64(sb, math.Float64bits(v))
	sb = protowire.AppendTag(sb, 2, protowire.VarintType)
	sb = protowire.AppendVarint(sb, uint64(ts))
	series = protowire.AppendTag(series, 2, protowire.BytesType)
	series = protowire.AppendBytes(series, sb)
	out = protowire.AppendTag(out, 1, protowire.BytesType)
	return protowire.AppendBytes(out, series)
}
