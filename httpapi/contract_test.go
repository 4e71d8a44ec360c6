package httpapi_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestWriteStatusAndIndex checks that a create answers 201, an update 200,
// and both carry X-Atomfed-Index equal to the object's modify index.
func TestWriteStatusAndIndex(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	for _, w := range []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"region create (seed path)", http.MethodPost, "/region/register", regionJSON("us-east"), http.StatusCreated},
		{"region update (seed path)", http.MethodPost, "/region/register", regionJSON("us-east"), http.StatusOK},
		{"region create (v1)", http.MethodPut, "/v1/regions/eu-west", regionJSON("eu-west"), http.StatusCreated},
		{"region update (v1)", http.MethodPut, "/v1/regions/eu-west", map[string]any{"url": "https://eu.example.com"}, http.StatusOK},
		{"tenant create", http.MethodPut, "/v1/tenants/acme", tenantJSON("acme", "us-east"), http.StatusCreated},
		{"tenant update", http.MethodPut, "/v1/tenants/acme", tenantJSON("acme", "us-east", "eu-west"), http.StatusOK},
	} {
		t.Run(w.name, func(t *testing.T) {
			r := mustWrite(t, l, w.method, w.path, w.body, w.want)
			var obj struct {
				CreateIndex uint64 `json:"create_index"`
				ModifyIndex uint64 `json:"modify_index"`
			}
			r.JSON(t, &obj)
			if r.Index() == 0 || r.Index() != obj.ModifyIndex {
				t.Fatalf("X-Atomfed-Index %q, want the modify index %d", r.Header.Get("X-Atomfed-Index"), obj.ModifyIndex)
			}
			if (w.want == http.StatusCreated) != (obj.CreateIndex == obj.ModifyIndex) {
				t.Fatalf("status %d but create_index %d, modify_index %d", r.Status, obj.CreateIndex, obj.ModifyIndex)
			}
		})
	}
	r := mustWrite(t, l, http.MethodDelete, "/v1/tenants/acme", nil, http.StatusOK)
	if r.Index() == 0 {
		t.Fatalf("delete answered no X-Atomfed-Index")
	}
}

// TestErrorContract sends every kind of bad request, to the leader and to a
// follower, and checks the documented status, the error envelope, and that
// neither the state nor the audit head moved.
func TestErrorContract(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("us-east"), http.StatusCreated)
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("eu-west"), http.StatusCreated)
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("ap-south"), http.StatusCreated)
	created := mustWrite(t, l, http.MethodPut, "/v1/tenants/acme", tenantJSON("acme", "us-east", "eu-west"), http.StatusCreated)
	var first fsm.Tenant
	created.JSON(t, &first)
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme", tenantJSON("acme", "us-east"), http.StatusOK)
	mustWrite(t, l, http.MethodPut, "/v1/tenants/globex", tenantJSON("globex", "ap-south", "eu-west"), http.StatusCreated)
	hooli := func(home string, mirrors ...string) map[string]any {
		m := tenantJSON("hooli", home, mirrors...)
		m["tables"] = []map[string]any{{"name": "orders", "pii_columns": []string{"email"}}}
		return m
	}
	mustWrite(t, l, http.MethodPut, "/v1/tenants/hooli", hooli("ap-south", "eu-west"), http.StatusCreated)
	c.Settle() // each region's probe task is created asynchronously
	staleCAS := strconv.FormatUint(first.ModifyIndex, 10)

	big := `{"name":"big","url":"https://big.example.com","labels":{"k":"` + strings.Repeat("a", 2<<20) + `"}}`
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"malformed JSON", http.MethodPut, "/v1/regions/x", `{"name":"x",}`, 400, "malformed_json"},
		{"truncated JSON", http.MethodPut, "/v1/regions/x", `{"name":"x"`, 400, "malformed_json"},
		{"unknown field", http.MethodPut, "/v1/regions/x", `{"name":"x","url":"https://x.example.com","colour":"red"}`, 400, "unknown_field"},
		{"wrong type", http.MethodPut, "/v1/regions/x", `{"name":"x","url":42}`, 400, "invalid_type"},
		{"2 MiB body", http.MethodPut, "/v1/regions/big", []byte(big), 413, "body_too_large"},
		{"2 MiB body, chunked", http.MethodPut, "/v1/regions/big", chunked(big), 413, "body_too_large"},
		{"invalid region name", http.MethodPost, "/region/register", `{"name":"Bad_Name","url":"https://b.example.com"}`, 400, "invalid_region_name"},
		{"invalid region url", http.MethodPost, "/region/register", `{"name":"x","url":"ftp://x"}`, 400, "invalid_url"},
		{"unknown home region", http.MethodPut, "/v1/tenants/initech", `{"home_region":"nowhere"}`, 400, "unknown_region"},
		{"unknown mirror region", http.MethodPut, "/v1/tenants/initech", `{"home_region":"us-east","mirrors":["nowhere"]}`, 400, "unknown_region"},
		{"stale cas", http.MethodPut, "/v1/tenants/acme?cas=" + staleCAS, tenantJSON("acme", "us-east"), 409, "cas_conflict"},
		{"cas=0 on an existing tenant", http.MethodPut, "/v1/tenants/acme?cas=0", tenantJSON("acme", "us-east"), 409, "cas_conflict"},
		{"cas=0 on an existing region", http.MethodPut, "/v1/regions/us-east?cas=0", regionJSON("us-east"), 409, "cas_conflict"},
		{"move a replicated tenant's home", http.MethodPut, "/v1/tenants/hooli", hooli("eu-west", "ap-south"), 409, "home_change_needs_switchover"},
		{"move a replicated tenant's home, dropping its mirrors", http.MethodPut, "/v1/tenants/hooli", hooli("eu-west"), 409, "home_change_needs_switchover"},
		{"patch a replicated tenant's home", http.MethodPatch, "/v1/tenants/hooli", `{"home_region":"us-east"}`, 409, "home_change_needs_switchover"},
		{"patch a replicated tenant's home onto its mirror", http.MethodPatch, "/v1/tenants/hooli", `{"home_region":"eu-west"}`, 409, "home_change_needs_switchover"},
		{"put a replicated tenant's home onto its mirror, still listed", http.MethodPut, "/v1/tenants/hooli", hooli("eu-west", "eu-west"), 409, "home_change_needs_switchover"},
		{"patch the epoch", http.MethodPatch, "/v1/tenants/hooli", `{"epoch":3}`, 400, "read_only_field"},
		{"stale cas on delete", http.MethodDelete, "/v1/tenants/acme?cas=" + staleCAS, nil, 409, "cas_conflict"},
		{"delete a home region in use", http.MethodDelete, "/v1/regions/us-east", nil, 409, "region_in_use"},
		{"delete a mirror region in use", http.MethodDelete, "/v1/regions/eu-west", nil, 409, "region_in_use"},
		{"delete an unknown tenant", http.MethodDelete, "/v1/tenants/nobody", nil, 404, "tenant_not_found"},
		{"delete an unknown region", http.MethodDelete, "/v1/regions/nowhere", nil, 404, "region_not_found"},
		{"unknown route", http.MethodGet, "/v1/nope", nil, 404, "no_such_endpoint"},
		{"unknown top-level route", http.MethodGet, "/nope", nil, 404, "no_such_endpoint"},
		{"wrong method on v1", http.MethodPost, "/v1/tenants/acme", `{}`, 405, "method_not_allowed"},
		{"wrong method on a list", http.MethodPost, "/v1/regions", regionJSON("x"), 405, "method_not_allowed"},
		{"wrong method on a seed path", http.MethodDelete, "/region/register", nil, 405, "method_not_allowed"},
		{"trailing object", http.MethodPut, "/v1/regions/x", `{"name":"x","url":"https://x.example.com"} {}`, 400, "malformed_json"},
		{"trailing garbage", http.MethodPut, "/v1/regions/x", `{"name":"x","url":"https://x.example.com"}garbage`, 400, "malformed_json"},
		{"empty body", http.MethodPut, "/v1/regions/x", ``, 400, "empty_body"},
		{"whitespace body", http.MethodPost, "/region/register", " \n\t", 400, "empty_body"},
		{"bad cas", http.MethodPut, "/v1/tenants/acme?cas=abc", tenantJSON("acme", "us-east"), 400, "invalid_cas"},
		{"bad cas on delete", http.MethodDelete, "/v1/tenants/acme?cas=-1", nil, 400, "invalid_cas"},
		{"region body/path mismatch", http.MethodPut, "/v1/regions/x", regionJSON("y"), 400, "name_mismatch"},
		{"tenant body/path mismatch", http.MethodPut, "/v1/tenants/acme", tenantJSON("globex", "us-east"), 400, "id_mismatch"},
		{"invalid tenant id", http.MethodPut, "/v1/tenants/Bad_ID", `{"home_region":"us-east"}`, 400, "invalid_tenant_id"},
		{"bad index", http.MethodGet, "/v1/tenants?index=abc", nil, 400, "invalid_index"},
		{"bad wait", http.MethodGet, "/v1/tenants?index=1&wait=soon", nil, 400, "invalid_wait"},
	}
	for _, n := range []*testcluster.Node{l, c.Followers()[0]} {
		for _, tc := range cases {
			t.Run(n.ID+"/"+tc.name, func(t *testing.T) {
				before := stateOf(t, l, "")
				var r *testcluster.Response
				testutil.Eventually(t, 15*time.Second, func() error {
					b, h := signRegionWrite(c, tc.method, tc.path, tc.body, nil)
					r = n.Do(t, tc.method, tc.path, sendable(b), h)
					if retryable(r) {
						return fmt.Errorf("%d %s", r.Status, r.Body)
					}
					return nil
				})
				wantError(t, r, tc.status, tc.code)
				after := stateOf(t, l, "")
				if !after.equal(before) {
					t.Fatalf("a refused request changed the state:\nbefore %v\nafter  %v", before, after)
				}
			})
		}
	}
}

// chunked is a body sent without a Content-Length.
type chunked string

// sendable turns a case's body into what Node.Do sends: strings as bytes
// (with a length), chunked as a reader without one.
func sendable(body any) any {
	switch b := body.(type) {
	case string:
		return []byte(b)
	case chunked:
		return io.MultiReader(strings.NewReader(string(b)))
	}
	return body
}
