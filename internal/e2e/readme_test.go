package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestREADMESignedRegistrationWithCurl runs the README's shell recipe for a
// signed registration (jq, openssl, curl) against a real cluster, with
// `openssl dgst -sign` standing in for `cosign sign-blob` (same signature
// format; cosign is not installed here), and then replays it: the replay
// must be refused.
func TestREADMESignedRegistrationWithCurl(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq", "openssl", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (apt-get install %s)", tool, tool)
		}
	}
	c := startCluster(t)
	leader := waitLeader(t, c)
	dir := t.TempDir()
	script := `set -euo pipefail
cd "$WORK"
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out sa-east.key
openssl pkey -in sa-east.key -pubout -out sa-east.pub
alias afcurl='curl -s --cacert "$ATOMFED_CACERT" -H "Authorization: Bearer $FEDERATION_TOKEN"'
shopt -s expand_aliases
KEY_ID=$(openssl pkey -pubin -in sa-east.pub -outform DER | sha256sum | cut -c1-32)
jq -n --arg pub "$(cat sa-east.pub)" --arg kid "$KEY_ID" --arg ts "$(date -u +%FT%TZ)" --arg nonce "$(openssl rand -hex 16)" \
  '{name:"sa-east", url:"https://sa-east.example.com:8401", tier:"staging", public_key:$pub, key_id:$kid, timestamp:$ts, nonce:$nonce}' > body.json
openssl dgst -sha256 -sign sa-east.key body.json | base64 -w0 > body.sig
afcurl -o first.json -w '%{http_code}\n' -XPOST -H "X-Atomfed-Signature: $(cat body.sig)" --data-binary @body.json $ATOMFED_ADDR/region/register
afcurl -o replay.json -w '%{http_code}\n' -XPOST -H "X-Atomfed-Signature: $(cat body.sig)" --data-binary @body.json $ATOMFED_ADDR/region/register
`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "WORK="+dir, "ATOMFED_ADDR="+leader.URL, "ATOMFED_CACERT="+c.Sec.CAPath, "FEDERATION_TOKEN="+procs.Token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("recipe failed: %v\n%s", err, out)
	}
	codes := strings.Fields(string(out))
	first, _ := os.ReadFile(filepath.Join(dir, "first.json"))
	replay, _ := os.ReadFile(filepath.Join(dir, "replay.json"))
	if len(codes) != 2 || codes[0] != "201" {
		t.Fatalf("signed registration: %s %s", out, first)
	}
	if codes[1] != "403" || !strings.Contains(string(replay), "replayed_nonce") {
		t.Fatalf("replay: %s %s", codes[1], replay)
	}
	r, _, err := leader.Client.Region(ctx(t, 10*time.Second), "sa-east", nil)
	if err != nil || r.URL != "https://sa-east.example.com:8401" {
		t.Fatalf("registered region: %+v %v", r, err)
	}
}

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
	dir := t.TempDir()
	// The 15 ports were free when picked, but tests of other packages run
	// alongside and may take one before dev binds it: start again on other
	// ports when dev exits on a port in use.
	var p *procs.Proc
	var base int
	for attempt := 1; ; attempt++ {
		base = consecutiveFreePorts(t, 15)
		p = procs.NewProc("dev", atomfedBin, filepath.Join(dir, fmt.Sprintf("dev-%d.log", attempt)), "dev", "--no-postgres",
			"--data-dir", filepath.Join(dir, fmt.Sprintf("data-%d", attempt)),
			"--http-port", strconv.Itoa(base), "--raft-port", strconv.Itoa(base+3), "--serf-port", strconv.Itoa(base+6),
			"--agent-http-port", strconv.Itoa(base+9), "--agent-serf-port", strconv.Itoa(base+12))
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		proc := p
		t.Cleanup(func() {
			_ = proc.Term()
			if _, err := proc.Wait(30 * time.Second); err != nil {
				_ = proc.Kill9()
			}
			if t.Failed() {
				t.Logf("log of atomfed dev (%s):\n%s", proc.ExitStatus(), proc.LogTail(60))
			}
			proc.Close()
		})
		if attempt == 3 || !exitsOnPortInUse(p) {
			break
		}
		t.Logf("atomfed dev found one of ports %d-%d taken; trying other ports", base, base+14)
	}
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
