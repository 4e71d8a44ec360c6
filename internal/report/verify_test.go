package report

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/structs"
)

// brokenFederation is an API that answers the calls of the registry and
// policy verifications the way a federation with one defect would: it
// accepts a registration whose body does not match its signature
// (forgedOK), registers a production region without approval (noP3), or
// registers regions that its servers then never show (lost).
type brokenFederation struct {
	forgedOK, noP3, lost bool
	regions              map[string]*fsm.Region
}

func (b *brokenFederation) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	write := func(code int, v any) {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.URL.Path == "/v1/policy/status":
		st := structs.PolicyStatus{Node: "s1"}
		for _, id := range []string{"P1", "P2", "P3", "P4", "P5", "P6", "P7"} {
			st.Policies = append(st.Policies, structs.PolicyResult{ID: id, Status: structs.PolicyPass, Reason: "stand-in"})
		}
		write(200, st)
	case r.URL.Path == "/region/register" && r.Method == http.MethodPost:
		var reg fsm.Region
		_ = json.NewDecoder(r.Body).Decode(&reg)
		if strings.Contains(reg.URL, "forged") && !b.forgedOK {
			write(403, map[string]any{"error": map[string]string{"code": "bad_signature", "message": "signature does not match"}})
			return
		}
		if reg.Tier == fsm.TierProduction && !b.noP3 {
			write(202, fsm.Approval{ID: "appr-1", Status: fsm.ApprovalPending, Required: 2})
			return
		}
		reg.ModifyIndex = 10
		if !b.lost {
			b.regions[reg.Name] = &reg
		}
		write(200, reg)
	case strings.HasPrefix(r.URL.Path, "/v1/regions/") && r.Method == http.MethodGet:
		if reg := b.regions[strings.TrimPrefix(r.URL.Path, "/v1/regions/")]; reg != nil {
			write(200, reg)
			return
		}
		write(404, map[string]any{"error": map[string]string{"code": "not_found", "message": "no such region"}})
	default:
		write(404, map[string]any{"error": map[string]string{"code": "not_found", "message": r.URL.Path}})
	}
}

func brokenEnv(t *testing.T, b *brokenFederation) *verifyEnv {
	b.regions = map[string]*fsm.Region{}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithToken("t"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := signing.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	return &verifyEnv{c: c, opts: []client.Option{client.WithToken("t")}, token: "t", timeout: 500 * time.Millisecond,
		fed: &Federation{Servers: []NodeInfo{{Node: "s1", URL: srv.URL}}}, approvers: []*signing.Signer{k}}
}

// TestVerificationsFailOnABrokenFederation: the registry and policy
// verifications fail, naming the defect, against a federation that
// accepts a forged request, registers a production region without
// approval, or loses a registration.
func TestVerificationsFailOnABrokenFederation(t *testing.T) {
	cases := []struct {
		name   string
		b      *brokenFederation
		verify func(context.Context, *verifyEnv) (*Verification, []AuditRef)
		want   string
	}{
		{"forged request accepted", &brokenFederation{forgedOK: true}, verifyPolicy, "does not match its signature was accepted"},
		{"production region without approval", &brokenFederation{noP3: true}, verifyPolicy, "P3 is not enforced"},
		{"registration lost", &brokenFederation{lost: true}, verifyRegistry, "not on every server"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, _ := c.verify(context.Background(), brokenEnv(t, c.b))
			if v.OK || !strings.Contains(v.Error, c.want) {
				t.Fatalf("verification ok=%t error %q, want a failure naming %q", v.OK, v.Error, c.want)
			}
			cr := componentReport(Component{Built: Built, Packages: []string{"fsm"}}, &TestRun{Packages: map[string]*PackageTests{
				Module + "/fsm": {Package: Module + "/fsm", Result: "pass", Passed: 1}}}, v)
			if cr.Verdict != verdictFail {
				t.Errorf("verdict %s (%s), want fail", cr.Verdict, cr.VerdictWhy)
			}
		})
	}
}
