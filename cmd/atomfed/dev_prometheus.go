package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// devPrometheus is dev's Prometheus of each region (--prometheus): each
// scrapes its region's server and agent, and the region's agent federates
// it (PROM_URL) into the global metrics view.
type devPrometheus struct {
	urls  map[string]string // by region
	procs []*exec.Cmd
	note  string
}

// startDevPrometheus starts one Prometheus per dev region on
// --prometheus-port and the ports after it, when the prometheus binary is
// installed; without it dev goes on with its agents scraping the atomfed
// nodes alone, and says so.
func startDevPrometheus(o devOptions, caPath string) *devPrometheus {
	p := &devPrometheus{urls: map[string]string{}}
	if !o.prometheus {
		return p
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		p.note = "  no prometheus installed (apt-get install prometheus): each region's metrics task scrapes its atomfed nodes only"
		return p
	}
	addr := func(port, i int) string { return fmt.Sprintf("%s:%d", o.host, port+i) }
	for i, r := range devRegions {
		dir := filepath.Join(o.dataDir, "prometheus-"+r.name)
		listen := addr(o.prometheusPort, i)
		cfg := fmt.Sprintf(`global: {scrape_interval: 5s, evaluation_interval: 5s}
scrape_configs:
  - job_name: atomfed-%s
    scheme: https
    tls_config: {ca_file: %q}
    static_configs: [{targets: [%q, %q]}]
`, r.name, caPath, addr(o.httpPort, i), addr(o.agentHTTPPort, i))
		if err := os.MkdirAll(dir, 0o700); err == nil {
			err = os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600)
		}
		logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
		if err != nil {
			p.note = fmt.Sprintf("  prometheus not started: %v", err)
			return p
		}
		cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+listen, "--storage.tsdb.retention.time=2h")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			p.note = fmt.Sprintf("  prometheus not started: %v", err)
			return p
		}
		logf.Close()
		p.procs = append(p.procs, cmd)
		p.urls[r.name] = "http://" + listen
	}
	// Ready before the agents federate them (a few hundred ms).
	deadline := time.Now().Add(20 * time.Second)
	for _, u := range p.urls {
		for time.Now().Before(deadline) {
			resp, err := http.Get(u + "/-/ready")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	p.note = "  one Prometheus per region, federated by the region's agent into the global view (GET /v1/metrics/federate):"
	return p
}

// stop ends the Prometheus processes.
func (p *devPrometheus) stop() {
	for _, c := range p.procs {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	p.procs = nil
}
