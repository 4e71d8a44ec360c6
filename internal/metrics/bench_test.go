package metrics

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// benchRegions builds regions snapshots of series series each, in families
// of perFamily series, with labels like a real exporter's.
func benchRegions(b *testing.B, regions, series, perFamily int) (*Store, []string, int) {
	st := NewStore()
	var names []string
	stored := 0
	for r := 0; r < regions; r++ {
		region := fmt.Sprintf("region-%d", r)
		names = append(names, region)
		var fams []*dto.MetricFamily
		for f := 0; f*perFamily < series; f++ {
			fam := &dto.MetricFamily{Name: proto.String(fmt.Sprintf("app_requests_%03d_total", f)), Help: proto.String("Requests."), Type: dto.MetricType_COUNTER.Enum()}
			for i := 0; i < perFamily && f*perFamily+i < series; i++ {
				fam.Metric = append(fam.Metric, &dto.Metric{Label: []*dto.LabelPair{
					label("code", fmt.Sprint(200+i%5)), label("handler", fmt.Sprintf("/api/v1/resource/%d", i/5)),
					label("instance", fmt.Sprintf("10.0.%d.%d:9100", i%7, i%250)), label("job", "app"), label(RegionLabel, region),
				}, Counter: &dto.Counter{Value: proto.Float64(float64(i * 17))}})
			}
			fams = append(fams, fam)
		}
		data := snapshot(b, fams...)
		stored += len(data)
		put(b, st, region, 1, time.Now(), data)
	}
	return st, names, stored
}

// peakWriter discards what it is given and samples the live heap every
// 256 writes: the federate answer's peak memory.
type peakWriter struct {
	n    int
	peak uint64
}

func (w *peakWriter) Write(p []byte) (int, error) {
	w.n++
	if w.n%256 == 0 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w.peak = max(w.peak, ms.HeapAlloc)
	}
	return len(p), nil
}

// BenchmarkFederate merges 3 regions x 50,000 series into Prometheus text,
// every series selected, with the series spread over families of 500 and
// in one family per region (the worst case of the per-family bound). It
// reports the compressed bytes a server keeps per series, the time per
// merged series, and the answer's peak live heap above the stored
// snapshots, per series of the largest family and per series in all.
func BenchmarkFederate(b *testing.B) {
	for _, perFamily := range []int{500, 50_000} {
		b.Run(fmt.Sprintf("3x50000/family=%d", perFamily), func(b *testing.B) {
			const regions, series = 3, 50_000
			st, names, stored := benchRegions(b, regions, series, perFamily)
			sel, err := ParseSelectors([]string{`{__name__=~".+"}`})
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			w := &peakWriter{}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p := NewPlan(names, st.Snapshots(names), time.Now(), time.Minute)
				res, err := Write(context.Background(), w, expfmt.FmtText, p, sel)
				if err != nil || res.Series != regions*series {
					b.Fatalf("%+v %v", res, err)
				}
			}
			b.StopTimer()
			total := float64(regions * series)
			peak := float64(w.peak) - float64(base.HeapAlloc)
			b.ReportMetric(float64(stored)/total, "stored-B/series")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/total, "ns/series")
			b.ReportMetric(peak/float64(min(perFamily, series)*regions), "peak-B/family-series")
			b.ReportMetric(peak/total, "peak-B/series")
		})
	}
}

// BenchmarkInspect is a server's cost of checking one region's push of
// 50,000 series.
func BenchmarkInspect(b *testing.B) {
	st, names, _ := benchRegions(b, 1, 50_000, 500)
	data := st.Snapshots(names)[names[0]].data
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Inspect(data, names[0], DefaultLimits()); err != nil {
			b.Fatal(err)
		}
	}
}

var _ io.Writer = (*peakWriter)(nil)
