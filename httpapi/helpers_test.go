package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

func regionJSON(name string) map[string]any {
	return map[string]any{"name": name, "url": "https://" + name + ".example.com"}
}

func tenantJSON(id, home string, mirrors ...string) map[string]any {
	m := map[string]any{"id": id, "home_region": home}
	if len(mirrors) > 0 {
		m["mirrors"] = mirrors
	}
	return m
}

// retryable reports whether r is a 503 that the API documents as safe to
// retry: nothing was applied (no leader right now, or raft was busy).
func retryable(r *testcluster.Response) bool {
	if r.Status != http.StatusServiceUnavailable {
		return false
	}
	d, _ := r.ErrorDetail()
	return d.Code == "no_leader" || d.Code == "busy"
}

// do sends a request, retrying while the answer is a retryable 503 (a
// leader election under CPU pressure), as a well-behaved client does.
// body must be re-sendable (not an io.Reader).
func do(t *testing.T, n *testcluster.Node, method, path string, body any, hdr http.Header) *testcluster.Response {
	t.Helper()
	var r *testcluster.Response
	err := testutil.Poll(15*time.Second, func() error {
		b, h := signRegionWrite(n.Cluster(), method, path, body, hdr)
		r = n.Do(t, method, path, b, h)
		if retryable(r) {
			return fmt.Errorf("%s %s on %s: %d %s", method, path, n.ID, r.Status, r.Body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// signRegionWrite signs a region registration given as an object with the
// region's own key, adding its public key (a first registration proves
// possession of it), as a region's tooling does. Raw bodies (strings,
// bytes) are sent as they are: they test the decoder.
func signRegionWrite(c *testcluster.Cluster, method, path string, body any, hdr http.Header) (any, http.Header) {
	m, ok := body.(map[string]any)
	isRegionWrite := (method == http.MethodPost && path == "/region/register") ||
		(method == http.MethodPut && strings.HasPrefix(path, "/v1/regions/") && !strings.HasSuffix(path, "/database"))
	if !ok || !isRegionWrite {
		return body, hdr
	}
	name, _ := m["name"].(string)
	if name == "" {
		name = strings.SplitN(strings.TrimPrefix(path, "/v1/regions/"), "?", 2)[0]
	}
	b, sig := c.SignBody(name, m, map[string]any{"public_key": string(c.Signer(name).PublicPEM)})
	h := http.Header{}
	for k, v := range hdr {
		h[k] = v
	}
	h.Set("X-Atomfed-Signature", sig)
	return b, h
}

// doLeader is do against whichever node is leader at each attempt.
func doLeader(t *testing.T, c *testcluster.Cluster, method, path string, body any, hdr http.Header) *testcluster.Response {
	t.Helper()
	var r *testcluster.Response
	err := testutil.Poll(15*time.Second, func() error {
		n := c.WaitLeader()
		b, h := signRegionWrite(c, method, path, body, hdr)
		r = n.Do(t, method, path, b, h)
		if retryable(r) {
			return fmt.Errorf("%s %s on %s: %d %s", method, path, n.ID, r.Status, r.Body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mustWrite sends a write and fails the test unless it answers want.
func mustWrite(t *testing.T, n *testcluster.Node, method, path string, body any, want int) *testcluster.Response {
	t.Helper()
	r := do(t, n, method, path, body, nil)
	if r.Status != want {
		t.Fatalf("%s %s on %s: status %d, want %d: %s", method, path, n.ID, r.Status, want, r.Body)
	}
	return r
}

// wantError checks the status and the exact error envelope.
func wantError(t *testing.T, r *testcluster.Response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	d, ok := r.ErrorDetail()
	if !ok {
		t.Fatalf("body is not the error envelope {\"error\":{\"code\",\"message\"}}: %s", r.Body)
	}
	if code != "" && d.Code != code {
		t.Fatalf("error code %q, want %q (message %q)", d.Code, code, d.Message)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json", ct)
	}
}

// view is what a node answers about the whole state.
type view struct {
	Regions []byte
	Tenants []byte
	Head    string
	Index   uint64
}

func (v view) String() string {
	return fmt.Sprintf("head=%s index=%d regions=%s tenants=%s", v.Head, v.Index, v.Regions, v.Tenants)
}

func (v view) equal(o view) bool {
	return bytes.Equal(v.Regions, o.Regions) && bytes.Equal(v.Tenants, o.Tenants) && v.Head == o.Head && v.Index == o.Index
}

// stateOf reads regions, tenants and the audit head from n with the given
// consistency ("" = linearizable).
func stateOf(t *testing.T, n *testcluster.Node, consistency string) view {
	t.Helper()
	q := ""
	if consistency != "" {
		q = "?consistency=" + consistency
	}
	var v view
	for _, p := range []struct {
		path string
		dst  *[]byte
	}{{"/v1/regions", &v.Regions}, {"/v1/tenants", &v.Tenants}} {
		r := do(t, n, http.MethodGet, p.path+q, nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s on %s: %d %s", p.path, n.ID, r.Status, r.Body)
		}
		*p.dst = r.Body
	}
	r := do(t, n, http.MethodGet, "/v1/status/audit"+q, nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /v1/status/audit on %s: %d %s", n.ID, r.Status, r.Body)
	}
	var a struct {
		Head  string `json:"head"`
		Index uint64 `json:"index"`
	}
	r.JSON(t, &a)
	v.Head, v.Index = a.Head, a.Index
	return v
}

// tenantIDs decodes a tenant list answer into its ids.
func tenantIDs(t *testing.T, r *testcluster.Response) []string {
	t.Helper()
	var l struct {
		Tenants []*fsm.Tenant `json:"tenants"`
	}
	r.JSON(t, &l)
	var ids []string
	for _, x := range l.Tenants {
		ids = append(ids, x.ID)
	}
	return ids
}

// keys returns the sorted top-level keys of a JSON object.
func keys(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object (%v): %s", err, b)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
