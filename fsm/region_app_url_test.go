package fsm

import (
	"strings"
	"testing"
)

// TestRegionAppURLValidation: app_url is optional, an absolute URL without
// credentials, query or fragment, and https unless the region's own API
// URL is plain http.
func TestRegionAppURLValidation(t *testing.T) {
	for _, c := range []struct {
		url, app, code string
	}{
		{"https://r.example.com:8401", "", ""},
		{"https://r.example.com:8401", "https://app.r.example.com", ""},
		{"https://r.example.com:8401", "https://app.r.example.com:8443/base", ""},
		{"http://127.0.0.1:8401", "http://127.0.0.1:8080", ""},
		{"http://127.0.0.1:8401", "https://app.example.com", ""},
		{"https://r.example.com:8401", "http://app.r.example.com", "invalid_app_url"},
		{"https://r.example.com:8401", "ftp://app.r.example.com", "invalid_app_url"},
		{"https://r.example.com:8401", "app.r.example.com", "invalid_app_url"},
		{"https://r.example.com:8401", "https://user:pw@app.r.example.com", "invalid_app_url"},
		{"https://r.example.com:8401", "https://app.r.example.com/?token=x", "invalid_app_url"},
		{"https://r.example.com:8401", "https://app.r.example.com/#x", "invalid_app_url"},
		{"https://r.example.com:8401", "https://" + strings.Repeat("a", MaxURLLen) + ".com", "invalid_app_url"},
	} {
		r := testRegion("r1")
		r.URL, r.AppURL = c.url, c.app
		NormalizeRegion(&r)
		if got := codeOf(ValidateRegion(&r)); got != c.code {
			t.Errorf("url %s app_url %.60s: code %q, want %q", c.url, c.app, got, c.code)
		}
	}
}

// TestRegionAppURLRules: a region write stores app_url only under
// RulesTrustBound; under older rules it is dropped, as the servers of
// those rules drop a field they do not know, so every server stores the
// same region.
func TestRegionAppURLRules(t *testing.T) {
	for _, c := range []struct {
		rules int
		want  string
	}{
		{0, ""},
		{RulesApprovalBound, ""},
		{RulesTrustBound, "https://app.us-east.example.com"},
	} {
		h := newHarness(t)
		r := testRegion("us-east")
		r.AppURL = "https://app.us-east.example.com"
		res := h.mustApply(RegionUpsertType, RegionUpsert{Region: r, At: 100, Rules: c.rules})
		if got := res.Value.(*Region).AppURL; got != c.want {
			t.Errorf("rules %d: stored app_url %q, want %q", c.rules, got, c.want)
		}
		h.f.Read(func(s *State) {
			if got := s.Regions["us-east"].AppURL; got != c.want {
				t.Errorf("rules %d: state has app_url %q, want %q", c.rules, got, c.want)
			}
		})
	}
}

// TestProductionRegionAppURLNeedsApproval: the application URL of a
// production region is where its tenants' traffic goes, so the region's
// own key cannot change it without the approvals of its registration,
// like its API URL; before RulesTrustBound it is not compared.
func TestProductionRegionAppURLNeedsApproval(t *testing.T) {
	prod := testRegion("prod-1")
	prod.Tier, prod.Status, prod.AppURL = TierProduction, RegionActive, "https://app.prod-1.example.com"
	// A state of its own: the registration's approvals are another test's.
	s0 := newState()
	stored := prod
	s0.Regions["prod-1"] = &stored
	moved := prod
	moved.AppURL = "https://attacker.example.net"
	if got := RegionUpsertChange(s0, &moved); got != "app_url https://app.prod-1.example.com -> https://attacker.example.net" {
		t.Fatalf("change described as %q", got)
	}
	if got := RegionUpsertAction(s0, &moved, RulesTrustBound); got != ActionRegisterProductionRegion {
		t.Fatalf("an app_url change of a production region is action %q, want %q", got, ActionRegisterProductionRegion)
	}
	if got := RegionUpsertAction(s0, &moved, RulesApprovalBound); got != "" {
		t.Fatalf("under rules %d app_url is unknown, so not gated; got action %q", RulesApprovalBound, got)
	}
	same := prod
	same.Labels = map[string]string{"team": "edge"}
	if got := RegionUpsertAction(s0, &same, RulesTrustBound); got != "" {
		t.Fatalf("a label change needs no approval; got action %q", got)
	}
}
