package metrics

import (
	"bytes"
	"compress/gzip"
	"context"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// FuzzInspect feeds a server's snapshot decoder arbitrary pushes, raw and
// gzip-wrapped: it never panics, and a snapshot it accepts merges into an
// answer that Prometheus' own text parser reads back, every series with
// the region label.
func FuzzInspect(f *testing.F) {
	f.Add(snapshot(f, gauge("up", 1, "region", "r", "job", "x")), false)
	f.Add(snapshot(f, gauge("a", 1, "region", "r"), &dto.MetricFamily{Name: proto.String("h"), Type: dto.MetricType_HISTOGRAM.Enum(),
		Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("region", "r")}, Histogram: &dto.Histogram{SampleCount: proto.Uint64(1), SampleSum: proto.Float64(2),
			Bucket: []*dto.Bucket{{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(1)}}}}}}), false)
	f.Add([]byte{0x0a, 0x02, 'u', 'p'}, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, true)
	f.Fuzz(func(t *testing.T, data []byte, wrap bool) {
		if wrap {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			_, _ = zw.Write(data)
			_ = zw.Close()
			data = b.Bytes()
		}
		lim := DefaultLimits()
		lim.MaxDecodedBytes, lim.MaxFamilyBytes = 1<<20, 1<<20
		info, err := Inspect(data, "r", lim)
		if err != nil {
			return
		}
		st := NewStore()
		if err := st.Put(NewSnapshot("r", "a", 1, time.Now(), ScrapeStatus{}, info, data)); err != nil {
			t.Fatal(err)
		}
		sel, _ := ParseSelectors([]string{`{region="r"}`})
		p := NewPlan([]string{"r"}, st.Snapshots([]string{"r"}), time.Now(), time.Minute)
		var out bytes.Buffer
		res, err := Write(context.Background(), &out, expfmt.FmtText, p, sel)
		if err != nil || len(res.Incomplete) != 0 {
			t.Fatalf("an accepted snapshot does not merge: %+v %v", res, err)
		}
		parser := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := parser.TextToMetricFamilies(&out)
		if err != nil {
			t.Fatalf("the answer does not parse: %v\n%s", err, out.String())
		}
		n := 0
		for name, fam := range fams {
			if name == MetricRegionUp || name == MetricRegionAge {
				continue
			}
			n += len(fam.Metric)
		}
		if n != info.Series || res.Series != info.Series {
			t.Fatalf("%d series parsed, %d written, %d accepted", n, res.Series, info.Series)
		}
	})
}
