package httpapi_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/ui"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestConsoleFilesAreStaticAndFenced: /ui/ serves the console's files
// without a token, with a Content-Security-Policy that allows no inline
// script, no eval and no framing; the files hold no data of the
// federation; nothing but GET and HEAD is accepted; and /ui is not a way
// around the API's authentication.
func TestConsoleFilesAreStaticAndFenced(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Servers: 1})
	l := c.WaitLeader()
	mustWrite(t, l, http.MethodPut, "/v1/regions/home", regionJSON("home"), http.StatusCreated)
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme-console", tenantJSON("acme-console", "home"), http.StatusCreated)
	anon := http.Header{"Authorization": {""}}
	for _, path := range []string{"/ui/", "/ui/console.js", "/ui/console.css"} {
		r := l.Do(t, http.MethodGet, path, nil, anon)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s without a token: %d %s", path, r.Status, r.Body)
		}
		csp := r.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: the CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: the CSP allows something unsafe: %q", path, csp)
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", path, r.Header)
		}
		for _, secret := range []string{"acme-console", testcluster.Token} {
			if strings.Contains(string(r.Body), secret) {
				t.Errorf("GET %s shows %q", path, secret)
			}
		}
	}
	if ct := l.Do(t, http.MethodGet, "/ui/console.js", nil, anon).Header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("console.js is served as %q", ct)
	}
	html := string(l.Do(t, http.MethodGet, "/ui/", nil, anon).Body)
	for _, inline := range []string{"<script>", "onclick=", "onload=", "style=\"", "javascript:"} {
		if strings.Contains(html, inline) {
			t.Errorf("index.html holds %q, which the CSP refuses", inline)
		}
	}
	if r := l.Do(t, http.MethodGet, "/ui", nil, anon); r.Status != http.StatusMovedPermanently || r.Header.Get("Location") != ui.Prefix {
		t.Errorf("GET /ui: %d to %q, want a redirect to %s", r.Status, r.Header.Get("Location"), ui.Prefix)
	}
	for _, req := range []struct{ method, path string }{{http.MethodPost, "/ui/"}, {http.MethodPut, "/ui/index.html"}, {http.MethodDelete, "/ui/console.js"}} {
		if r := l.Do(t, req.method, req.path, nil, anon); r.Status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d, want 405", req.method, req.path, r.Status)
		}
	}
	for _, path := range []string{"/ui/v1/tenants", "/ui/../v1/tenants/acme-console", "/ui/%2e%2e/v1/tenants"} {
		r := l.Do(t, http.MethodGet, path, nil, anon)
		if r.Status == http.StatusOK || strings.Contains(string(r.Body), "acme-console") {
			t.Errorf("GET %s without a token: %d %s", path, r.Status, r.Body)
		}
	}
}

// TestAuditCommandsRecomputeTheChain: GET /v1/status/audit?commands=true
// serves, with the recent entries, the log entries they hash: every link
// recomputes from the one before (as the console does in the browser),
// and a reader gets the token commands withheld while an operator gets
// them whole.
func TestAuditCommandsRecomputeTheChain(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Servers: 1})
	l := c.WaitLeader()
	mustWrite(t, l, http.MethodPut, "/v1/regions/home", regionJSON("home"), http.StatusCreated)
	reader, err := l.Client.CreateToken(testcluster.Ctx(t, 10*time.Second), fsm.RoleReader, "audit test")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a1", "a2", "a3"} {
		mustWrite(t, l, http.MethodPut, "/v1/tenants/"+id, tenantJSON(id, "home"), http.StatusCreated)
	}
	for name, tok := range map[string]string{"operator": testcluster.Token, "reader": reader.Secret} {
		r := l.Do(t, http.MethodGet, "/v1/status/audit?commands=true", nil, http.Header{"Authorization": {"Bearer " + tok}})
		var st wire.AuditStatus
		r.JSON(t, &st)
		logs := map[uint64]wire.AuditLogEntry{}
		for _, e := range st.Log {
			logs[e.Index] = e
		}
		verified, withheld := 0, 0
		for i := 1; i < len(st.Recent); i++ {
			e := st.Recent[i]
			le, ok := logs[e.Index]
			if !ok || le.Unavailable != "" {
				t.Fatalf("%s: no log entry for audit entry %d (%s): %+v", name, e.Index, e.Type, le)
			}
			found, hidden := false, false
			for _, cmd := range le.Commands {
				hidden = hidden || cmd.Withheld
				if !cmd.Withheld && linkHash(st.Recent[i-1].Hash, e.Index, cmd.Type, cmd.Body) == e.Hash {
					found = true
				}
			}
			switch {
			case found:
				verified++
			case hidden && name == "reader" && e.Type == fsm.TokenCreateType.String():
				withheld++
			default:
				t.Fatalf("%s: entry %d (%s) does not recompute from the one before", name, e.Index, e.Type)
			}
			if name == "reader" && e.Type == fsm.TokenCreateType.String() && !hidden {
				t.Errorf("a reader was served the token command at %d", e.Index)
			}
		}
		if verified < 4 || (name == "reader") != (withheld == 1) || st.Recent[len(st.Recent)-1].Hash != st.Head {
			t.Fatalf("%s: %d links verified, %d withheld, head %s: %+v", name, verified, withheld, st.Head, st.Recent)
		}
	}
	r := l.Do(t, http.MethodGet, "/v1/status/audit?recent=2", nil, nil)
	var st wire.AuditStatus
	r.JSON(t, &st)
	if len(st.Recent) != 2 || st.Log != nil || st.Recent[1].Hash != st.Head {
		t.Fatalf("recent=2: %+v", st)
	}
	wantError(t, l.Do(t, http.MethodGet, "/v1/status/audit?recent=0", nil, nil), http.StatusBadRequest, "invalid_recent")
	wantError(t, l.Do(t, http.MethodGet, "/v1/status/audit?commands=maybe", nil, nil), http.StatusBadRequest, "invalid_commands")
}

// linkHash is fsm's chainHash, written again from docs/api.md.
func linkHash(prevHex string, index uint64, t uint8, body []byte) string {
	prev, _ := hex.DecodeString(prevHex)
	h := sha256.New()
	h.Write(prev)
	var ib [8]byte
	binary.BigEndian.PutUint64(ib[:], index)
	h.Write(ib[:])
	h.Write([]byte{t})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}
