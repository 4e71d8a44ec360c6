package metrics

import (
	"context"
	"io"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// Health families every answer carries, for every registered region.
const (
	// MetricRegionUp is 1 when the region's snapshot is within max_age and
	// all of its selected series were written before the deadline.
	MetricRegionUp = "atomfed_region_scrape_up"
	// MetricRegionAge is the age of the region's snapshot on the server
	// that answered (absent when it has none).
	MetricRegionAge = "atomfed_region_scrape_age_seconds"
)

// Plan is what one answer merges: the fresh snapshots, and the regions
// without one (no snapshot, or older than max_age).
type Plan struct {
	Regions []string // every registered region, sorted
	Fresh   map[string]*Snapshot
	Missing []string // sorted
	Now     time.Time
	all     map[string]*Snapshot
}

// NewPlan splits the registered regions into fresh and missing ones.
func NewPlan(regions []string, snaps map[string]*Snapshot, now time.Time, maxAge time.Duration) *Plan {
	p := &Plan{Regions: sortedCopy(regions), Fresh: map[string]*Snapshot{}, Now: now, all: snaps}
	for _, r := range p.Regions {
		if s := snaps[r]; s != nil && now.Sub(s.Received) <= maxAge {
			p.Fresh[r] = s
		} else {
			p.Missing = append(p.Missing, r)
		}
	}
	return p
}

// Result says how an answer went.
type Result struct {
	// Incomplete are the fresh regions whose selected series were not all
	// written: the deadline passed first.
	Incomplete []string
	Families   int
	Series     int
}

// Write merges the plan's fresh snapshots into one exposition in format,
// families sorted by name, each written once with the series of every
// region that has it (a region whose family has another type than the
// first region's is left out of that family), keeping the series sel
// selects; then the health families for every region. It holds one family
// per region at a time. When ctx ends (the deadline), it stops merging,
// writes the health families with the unfinished regions down, and
// returns; only an error of w is returned.
func Write(ctx context.Context, w io.Writer, format expfmt.Format, p *Plan, sel Selectors) (Result, error) {
	var res Result
	enc := expfmt.NewEncoder(w, format)
	type cursor struct {
		region string
		r      *familyReader
		cur    *dto.MetricFamily
	}
	var cs []*cursor
	failed := map[string]bool{}
	lim := DefaultLimits()
	for _, region := range p.Regions {
		s := p.Fresh[region]
		if s == nil {
			continue
		}
		r, err := newFamilyReader(s.data, lim)
		if err != nil {
			failed[region] = true
			continue
		}
		cs = append(cs, &cursor{region: region, r: r})
	}
	advance := func(c *cursor) {
		f := &dto.MetricFamily{}
		switch err := c.r.next(f); {
		case err == io.EOF:
			c.cur = nil
		case err != nil:
			c.cur = nil
			failed[c.region] = true
		default:
			c.cur = f
		}
	}
	for _, c := range cs {
		advance(c)
	}
	for {
		if ctx.Err() != nil {
			for _, c := range cs {
				if c.cur != nil {
					failed[c.region] = true
				}
			}
			break
		}
		name := ""
		for _, c := range cs {
			if c.cur != nil && (name == "" || c.cur.GetName() < name) {
				name = c.cur.GetName()
			}
		}
		if name == "" {
			break
		}
		var out *dto.MetricFamily
		fs := sel.ForName(name)
		for _, c := range cs {
			if c.cur == nil || c.cur.GetName() != name {
				continue
			}
			f := c.cur
			if fs.Any() {
				if out == nil {
					out = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type, Unit: f.Unit}
				}
				if f.GetType() == out.GetType() {
					for _, m := range f.Metric {
						if fs.Matches(m) {
							out.Metric = append(out.Metric, m)
						}
					}
				}
			}
			advance(c)
		}
		if out != nil && len(out.Metric) > 0 {
			if err := enc.Encode(out); err != nil {
				return res, err
			}
			res.Families++
			res.Series += len(out.Metric)
		}
	}
	for _, c := range cs {
		if failed[c.region] {
			res.Incomplete = append(res.Incomplete, c.region)
		}
	}
	for _, f := range healthFamilies(p, failed) {
		if err := enc.Encode(f); err != nil {
			return res, err
		}
	}
	if cl, ok := enc.(expfmt.Closer); ok {
		if err := cl.Close(); err != nil {
			return res, err
		}
	}
	return res, nil
}

func healthFamilies(p *Plan, failed map[string]bool) []*dto.MetricFamily {
	up := &dto.MetricFamily{Name: proto.String(MetricRegionUp), Type: dto.MetricType_GAUGE.Enum(),
		Help: proto.String("1 when the region's metrics snapshot on this server is fresh (within max_age) and was merged whole before the deadline, else 0.")}
	age := &dto.MetricFamily{Name: proto.String(MetricRegionAge), Type: dto.MetricType_GAUGE.Enum(),
		Help: proto.String("Age of the region's newest metrics snapshot on this server, in seconds.")}
	for _, r := range p.Regions {
		lbl := []*dto.LabelPair{{Name: proto.String(RegionLabel), Value: proto.String(r)}}
		v := 0.0
		if p.Fresh[r] != nil && !failed[r] {
			v = 1
		}
		up.Metric = append(up.Metric, &dto.Metric{Label: lbl, Gauge: &dto.Gauge{Value: proto.Float64(v)}})
		if s := p.all[r]; s != nil {
			age.Metric = append(age.Metric, &dto.Metric{Label: lbl, Gauge: &dto.Gauge{Value: proto.Float64(p.Now.Sub(s.Received).Seconds())}})
		}
	}
	out := []*dto.MetricFamily{up}
	if len(age.Metric) > 0 {
		out = append(out, age)
	}
	return out
}
