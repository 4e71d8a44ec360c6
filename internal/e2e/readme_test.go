package e2e_test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/e2e"
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
	cmd.Env = append(os.Environ(), "WORK="+dir, "ATOMFED_ADDR="+leader.URL, "ATOMFED_CACERT="+c.Sec.CAPath, "FEDERATION_TOKEN="+e2e.Token)
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
