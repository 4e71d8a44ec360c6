package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/atomcloud/atomfed/internal/tlsutil"
)

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM in %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSecretsInitOut: the files a federation starts from, with the names
// the servers check (server.atomfed and every node), chaining to the CA;
// keys 0600; a second run into the same directory is refused and changes
// nothing.
func TestSecretsInitOut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	run := func() (string, error) {
		cmd := newRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"secrets", "init", "--out", dir, "--server-name", "s1,s2", "--server-name", "s3", "--server-ip", "10.0.0.1"})
		err := cmd.Execute()
		return out.String(), err
	}
	if out, err := run(); err != nil || strings.Contains(out, "atf_") {
		t.Fatalf("%v: %s", err, out)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(read("ca.pem"))
	srv := parseCert(t, read("server.pem"))
	for _, n := range []string{tlsutil.ServerName, "s1", "s2", "s3", "localhost"} {
		if !slices.Contains(srv.DNSNames, n) {
			t.Errorf("server certificate lacks %s: %v", n, srv.DNSNames)
		}
	}
	if !slices.ContainsFunc(srv.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("10.0.0.1")) }) {
		t.Errorf("server certificate lacks 10.0.0.1: %v", srv.IPAddresses)
	}
	agent := parseCert(t, read("agent.pem"))
	if slices.Contains(agent.DNSNames, tlsutil.ServerName) || !slices.Contains(agent.DNSNames, tlsutil.AgentName) {
		t.Errorf("agent certificate names %v", agent.DNSNames)
	}
	for _, c := range []*x509.Certificate{srv, agent} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s does not chain to ca.pem: %v", c.Subject.CommonName, err)
		}
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(read("gossip.key")))); err != nil || len(k) != 32 {
		t.Errorf("gossip.key: %d bytes, %v", len(k), err)
	}
	if tok := string(read("federation-token")); !strings.HasPrefix(tok, "atf_") || len(strings.TrimSpace(tok)) != 68 {
		t.Errorf("federation-token %q", tok)
	}
	for _, name := range []string{"ca-key.pem", "server-key.pem", "agent-key.pem", "gossip.key", "federation-token"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", name, st.Mode(), err)
		}
	}
	before := read("server-key.pem")
	if _, err := run(); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second run: %v", err)
	}
	if !bytes.Equal(before, read("server-key.pem")) {
		t.Fatal("the second run replaced a key")
	}
}

// TestSecretsInitKubernetes: with --kubernetes the material goes into the
// named Secrets through the API, with the pod's service-account token; a
// Secret that exists (409) is kept and reported so; a refusal (403) says
// what the job's role lacks; nothing secret is printed.
func TestSecretsInitKubernetes(t *testing.T) {
	var mu sync.Mutex
	got := map[string]map[string][]byte{}
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer sa-token" || r.Method != http.MethodPost || r.URL.Path != "/api/v1/namespaces/fed/secrets" {
			http.Error(w, `{"message":"unexpected `+r.Method+` `+r.URL.Path+`"}`, http.StatusBadRequest)
			return
		}
		var s struct {
			Metadata struct{ Name string } `json:"metadata"`
			Data     map[string][]byte     `json:"data"`
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &s); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch s.Metadata.Name {
		case "fed-gossip":
			http.Error(w, `{"message":"secrets \"fed-gossip\" already exists"}`, http.StatusConflict)
			return
		case "forbidden":
			http.Error(w, `{"message":"secrets is forbidden: User cannot create"}`, http.StatusForbidden)
			return
		}
		mu.Lock()
		got[s.Metadata.Name] = s.Data
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer api.Close()
	sa := t.TempDir()
	for name, content := range map[string][]byte{
		"token": []byte("sa-token\n"), "namespace": []byte("fed"),
		"ca.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}),
	} {
		if err := os.WriteFile(filepath.Join(sa, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := serviceAccountDir
	serviceAccountDir = sa
	defer func() { serviceAccountDir = old }()
	u, _ := url.Parse(api.URL)
	t.Setenv("KUBERNETES_SERVICE_HOST", u.Hostname())
	t.Setenv("KUBERNETES_SERVICE_PORT", u.Port())
	run := func(args ...string) (string, error) {
		cmd := newRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(append([]string{"secrets", "init", "--kubernetes", "--server-name", "fed-server-0"}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	out, err := run("--tls-secret", "fed-tls", "--gossip-secret", "fed-gossip", "--token-secret", "fed-token")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"secret fed/fed-tls: created", "secret fed/fed-gossip: exists; kept as it is", "secret fed/fed-token: created"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, string(got["fed-token"]["token"])) || strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("a secret was printed:\n%s", out)
	}
	if keys := sortedKeys(got["fed-tls"]); !slices.Equal(keys, []string{"agent-key.pem", "agent.pem", "ca.pem", "server-key.pem", "server.pem"}) {
		t.Errorf("tls secret keys %v", keys)
	}
	if c := parseCert(t, got["fed-tls"]["server.pem"]); !slices.Contains(c.DNSNames, "fed-server-0") {
		t.Errorf("server certificate names %v", c.DNSNames)
	}
	if _, ok := got["fed-gossip"]; ok {
		t.Error("an existing secret was replaced")
	}
	if tok := string(got["fed-token"]["token"]); !strings.HasPrefix(tok, "atf_") {
		t.Errorf("token secret %q", tok)
	}
	if _, err := run("--tls-secret", "forbidden"); err == nil || !strings.Contains(err.Error(), "may not create Secrets in fed") {
		t.Errorf("403: %v", err)
	}
	if _, err := run(); err == nil || !strings.Contains(err.Error(), "at least one of") {
		t.Errorf("no secret named: %v", err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := run("--tls-secret", "x"); err == nil || !strings.Contains(err.Error(), "use --out DIR") {
		t.Errorf("outside a pod: %v", err)
	}
}
