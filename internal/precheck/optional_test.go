package precheck

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// startRedis runs a private redis-server with a password on a free
// loopback port.
func startRedis(t *testing.T, password string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("this test needs redis-server (apt-get install redis-server): %v", err)
	}
	port := testutil.FreePort(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--requirepass", password)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testutil.Eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return addr
}

// TestComponentChecksAreReportedButNeverDecide checks REDIS_URL against a
// real redis-server (with its password, with a wrong one, and a port
// where nothing listens), PROM_URL's readiness and S3_ENDPOINT's anonymous
// answer, and that none of them moves the seed's decision.
func TestComponentChecksAreReportedButNeverDecide(t *testing.T) {
	const pw = "s3cret-redis-pass"
	addr := startRedis(t, pw)
	ready := true
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/-/ready" || !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "Prometheus Server is Ready.\n")
	}))
	defer prom.Close()
	s3 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Error("the S3 check sent credentials")
		}
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>`)
	}))
	defer s3.Close()
	closed := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	ctx := context.Background()
	run := func(cfg Config) Checks {
		cfg.Timeout = 2 * time.Second
		return Run(ctx, cfg, OptionalChecks...)
	}

	got := run(Config{})
	for _, n := range OptionalChecks {
		if got[n].Status != StatusMissing {
			t.Errorf("%s unset: %+v, want MISSING", n, got[n])
		}
	}
	got = run(Config{RedisURL: "redis://:" + pw + "@" + addr + "/0", PromURL: prom.URL, S3Endpoint: s3.URL})
	if got[Redis].Status != StatusReachable || got[Prometheus].Status != StatusUp || got[S3].Status != StatusReachable {
		t.Errorf("all present: %+v", got)
	}
	ready = false
	got = run(Config{RedisURL: "redis://:wrong-password-123@" + addr, PromURL: prom.URL, S3Endpoint: "http://" + closed})
	if got[Redis].Status != ErrorStatus("auth") || got[Prometheus].Status != ErrorStatus("http_503") || !strings.HasPrefix(got[S3].Status, errorPrefix) {
		t.Errorf("wrong password, Prometheus not ready, nothing at the S3 endpoint: %+v", got)
	}
	got = run(Config{RedisURL: "redis://" + closed, PromURL: "ftp://x", S3Endpoint: "not a url"})
	if !strings.HasPrefix(got[Redis].Status, errorPrefix) || got[Prometheus].Status != ErrorStatus("invalid_url") || got[S3].Status != ErrorStatus("invalid_url") {
		t.Errorf("nothing at the Redis port, bad URLs: %+v", got)
	}
	for _, c := range got {
		if strings.Contains(c.Detail+c.Target, pw) || strings.Contains(c.Detail+c.Target, "wrong-password-123") {
			t.Errorf("a password reached the output: %+v", c)
		}
	}

	// The seed's rules weigh the four checks only: a missing or broken
	// component part changes no decision.
	seed := Checks{Registry: {Status: StatusUp}, Vault: {Status: StatusUp}, Cosign: {Status: StatusOK}, Postgres: {Status: StatusReachable}}
	for n, c := range got {
		seed[n] = c
	}
	if d, reasons := Decide(seed); d != Proceed || len(reasons) != 0 {
		t.Errorf("decision %s %v with the four seed checks healthy and the components' broken", d, reasons)
	}
}
