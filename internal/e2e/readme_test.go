package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestPlainHTTPServesOnlyPublicEndpoints: the API port answers plain HTTP
// for /health and /metrics (load balancers, scrapers, the precheck), and
// for anything else says to use HTTPS, without serving it.
func TestPlainHTTPServesOnlyPublicEndpoints(t *testing.T) {
	c := startCluster(t)
	s := waitLeader(t, c)
	base := "http://" + s.Config.HTTPAddr
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/health"); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Fatalf("plain /health: %d %s", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "atomfed_raft_state") {
		t.Fatalf("plain /metrics: %d", code)
	}
	if code, body := get("/region/list"); code != 400 || !strings.Contains(body, "tls_required") || strings.Contains(body, "regions") {
		t.Fatalf("plain /region/list: %d %s", code, body)
	}
}

// TestDevRegionListOverPlainHTTP is the first thing a newcomer tries after
// `make run`: `curl -s localhost:8401/region/list`. The dev federation
// serves the region list without a token over plain HTTP (as Consul's
// anonymous token reads the catalog) and nothing else: the rest of the API
// still wants TLS and a token.
func TestDevRegionListOverPlainHTTP(t *testing.T) {
	p, base, _ := startDev(t, t.TempDir(), false)
	url := fmt.Sprintf("http://127.0.0.1:%d", base)
	get := func(path string) (int, string, error) {
		resp, err := http.Get(url + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	testutil.Eventually(t, 90*time.Second, func() error {
		code, body, err := get("/region/list")
		if err != nil && !p.Running() {
			t.Fatalf("atomfed dev exited (%s) before serving /region/list", p.ExitStatus())
		}
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("plain /region/list: %d %s", code, body)
		}
		var list struct {
			Regions []struct {
				Name string `json:"name"`
			} `json:"regions"`
		}
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			return fmt.Errorf("plain /region/list: %v: %s", err, body)
		}
		var names []string
		for _, r := range list.Regions {
			names = append(names, r.Name)
		}
		sort.Strings(names)
		if strings.Join(names, ",") != "ap-south,eu-west,us-east" {
			return fmt.Errorf("plain /region/list lists %v, want the three dev regions", names)
		}
		// Anonymous readers learn names, URLs, tiers and health only.
		for _, detail := range []string{`"labels"`, `"location"`, `"database"`, `"probe"`, `"agents_alive"`} {
			if strings.Contains(body, detail) {
				t.Fatalf("the anonymous region list shows %s: %s", detail, body)
			}
		}
		return nil
	})
	if code, body, err := get("/v1/tenants"); err != nil || code != http.StatusBadRequest || !strings.Contains(body, "tls_required") {
		t.Fatalf("plain /v1/tenants on the dev federation: %d %s %v", code, body, err)
	}
}

// exitsOnPortInUse reports whether dev, just started, exits because one of
// its ports was taken, rather than starting every server and agent (it
// prints the export line for the CLI once all are up).
func exitsOnPortInUse(p *procs.Proc) bool {
	inUse := false
	_ = testutil.Poll(60*time.Second, func() error {
		if !p.Running() {
			inUse = p.LogContains("address already in use")
			return nil
		}
		if p.LogContains("export ATOMFED_ADDR=") {
			return nil
		}
		return errors.New("dev is still starting")
	})
	return inUse
}

// consecutiveFreePorts returns the first of n consecutive loopback ports
// that were all free a moment ago.
func consecutiveFreePorts(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		base := testutil.FreePort(t)
		if base+n > 65535 {
			continue
		}
		ok := true
		for i := 1; i < n && ok; i++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}
