package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// BenchmarkFederateVsPrometheus answers the same 3 regions x 50,000 series
// from atomfed's merge and from a real Prometheus' /federate (which scraped
// them once), and reports the ratio of their answer times; and atomfed's
// answer time with one of the regions black-holed (its snapshot stale):
// the deadline is never waited on, there is nothing to wait for. Needs
// the prometheus binary (make bench; skipped without it).
func BenchmarkFederateVsPrometheus(b *testing.B) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		b.Skip("no prometheus binary")
	}
	const regions, series = 3, 50_000
	st, names, _ := benchRegions(b, regions, series, 500)
	// The same series as one exposition for Prometheus to scrape.
	var text bytes.Buffer
	enc := expfmt.NewEncoder(&text, expfmt.FmtText)
	for _, r := range names {
		fr, err := newFamilyReader(st.Snapshots(names)[r].data, DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		for {
			f := &dto.MetricFamily{}
			if err := fr.next(f); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
			// Family names repeat across regions: Prometheus' text parser
			// does not mind for a scrape.
			if err := enc.Encode(f); err != nil {
				b.Fatal(err)
			}
		}
	}
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", string(expfmt.FmtText))
		_, _ = w.Write(text.Bytes())
	}))
	defer target.Close()
	promAddr := freeAddr(b)
	dir := b.TempDir()
	cfg := fmt.Sprintf("global: {scrape_interval: 1m}\nscrape_configs:\n  - job_name: bench\n    honor_labels: true\n    scrape_timeout: 50s\n    static_configs: [{targets: [%q]}]\n", target.Listener.Addr().String())
	if err := os.WriteFile(filepath.Join(dir, "p.yml"), []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "p.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if n, _ := promCount(promAddr); n == regions*series {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("Prometheus did not scrape the series in 2 minutes")
		}
		time.Sleep(500 * time.Millisecond)
	}
	sel, _ := ParseSelectors([]string{`{job="app"}`})
	fedURL := "http://" + promAddr + "/federate?" + url.Values{"match[]": {`{job="app"}`}}.Encode()
	var atomfed, prom, missing time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		p := NewPlan(names, st.Snapshots(names), time.Now(), time.Hour)
		if res, err := Write(context.Background(), io.Discard, expfmt.FmtText, p, sel); err != nil || res.Series != regions*series {
			b.Fatalf("%+v %v", res, err)
		}
		atomfed += time.Since(t0)
		t0 = time.Now()
		resp, err := http.Get(fedURL)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n < int64(regions*series*50) {
			b.Fatalf("Prometheus' /federate answered %d bytes", n)
		}
		prom += time.Since(t0)
		// region-2 black-holed: its snapshot is two hours old.
		snaps := st.Snapshots(names)
		old := *snaps["region-2"]
		old.Received = time.Now().Add(-2 * time.Hour)
		snaps["region-2"] = &old
		t0 = time.Now()
		p = NewPlan(names, snaps, time.Now(), time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if res, err := Write(ctx, io.Discard, expfmt.FmtText, p, sel); err != nil || res.Series != (regions-1)*series {
			b.Fatalf("%+v %v", res, err)
		}
		cancel()
		missing += time.Since(t0)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(atomfed.Milliseconds())/n, "atomfed-ms")
	b.ReportMetric(float64(prom.Milliseconds())/n, "prometheus-ms")
	b.ReportMetric(float64(atomfed)/float64(prom), "atomfed/prometheus")
	b.ReportMetric(float64(missing.Milliseconds())/n, "one-region-black-holed-ms")
}

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func promCount(addr string) (int, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(`count({job="app"})`))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Data.Result) == 0 {
		return 0, err
	}
	var n int
	_, err = fmt.Sscan(fmt.Sprint(out.Data.Result[0].Value[1]), &n)
	return n, err
}
