package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestRemoteWriteToPrometheus sends a region's snapshot to a real
// Prometheus 2.42 remote-write receiver: its counters, gauges, histograms
// and summaries are stored with their region labels, and the same
// snapshot is sent once.
func TestRemoteWriteToPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("this test needs Prometheus 2.42 (apt-get install prometheus; .ci/run installs it): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.yml"), []byte("global: {scrape_interval: 1m}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "p.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("not ready: %d", resp.StatusCode)
		}
		return nil
	})

	hist := &dto.MetricFamily{Name: proto.String("app_latency_seconds"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{{
		Label: []*dto.LabelPair{label("region", "us-east")},
		Histogram: &dto.Histogram{SampleCount: proto.Uint64(3), SampleSum: proto.Float64(0.6), Bucket: []*dto.Bucket{
			{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(1)}, {UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(3)}}},
	}}}
	summ := &dto.MetricFamily{Name: proto.String("app_size_bytes"), Type: dto.MetricType_SUMMARY.Enum(), Metric: []*dto.Metric{{
		Label:   []*dto.LabelPair{label("region", "us-east")},
		Summary: &dto.Summary{SampleCount: proto.Uint64(2), SampleSum: proto.Float64(10), Quantile: []*dto.Quantile{{Quantile: proto.Float64(0.5), Value: proto.Float64(4)}}},
	}}}
	st := NewStore()
	data := snapshot(t, counter("app_requests_total", 42, "job", "app", "region", "us-east"), gauge("app_up", 1, "job", "app", "region", "us-east"), hist, summ)
	info, err := Inspect(data, "us-east", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := st.Put(NewSnapshot("us-east", "a1", 1, now, ScrapeStatus{ScrapedAt: now}, info, data)); err != nil {
		t.Fatal(err)
	}
	w := &RemoteWriter{URL: "http://" + addr + "/api/v1/write", Store: st, Regions: func() []string { return []string{"us-east"} },
		Interval: 5 * time.Second, MaxAge: time.Minute}
	if err := w.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]string{
		`app_requests_total{region="us-east",job="app"}`:                        "42",
		`app_up{region="us-east"}`:                                              "1",
		`app_latency_seconds_bucket{region="us-east",le="+Inf"}`:                "3",
		`app_latency_seconds_bucket{region="us-east",le="0.1"}`:                 "1",
		`app_latency_seconds_count{region="us-east"}`:                           "3",
		`app_size_bytes{region="us-east",quantile="0.5"}`:                       "4",
		`app_size_bytes_sum{region="us-east"}`:                                  "10",
		`histogram_quantile(0.5, app_latency_seconds_bucket{region="us-east"})`: "",
	} {
		testutil.Eventually(t, 10*time.Second, func() error {
			v, err := instant(addr, q)
			if err != nil {
				return err
			}
			if want != "" && v != want {
				return fmt.Errorf("%s = %q, want %s", q, v, want)
			}
			return nil
		})
	}
	// Sent once: a second pass has nothing new (a failing receiver would
	// make it an error).
	w.URL = "http://127.0.0.1:1/api/v1/write"
	if err := w.Once(context.Background()); err != nil {
		t.Fatalf("the same snapshot was sent again: %v", err)
	}
}

// instant runs a PromQL query and returns the first result's value.
func instant(addr, q string) (string, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	if out.Status != "success" || len(out.Data.Result) == 0 {
		return "", fmt.Errorf("%s: %s %s (%d results)", q, out.Status, out.Error, len(out.Data.Result))
	}
	return strings.TrimSpace(fmt.Sprint(out.Data.Result[0].Value[1])), nil
}
