package httpapi_test

import (
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestPatchTenantKeepsWhatItDoesNotName: PUT replaces a tenant whole;
// PATCH (a JSON merge patch) changes only what it names: a list replaces
// the list, null removes a field, labels merge key by key. Bad patches are
// refused with 400 or 404 and change nothing.
func TestPatchTenantKeepsWhatItDoesNotName(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		c.RegisterRegion(&fsm.Region{Name: r, URL: "https://" + r + ".example.com"})
	}
	ctx := testcluster.Ctx(t, time.Minute)
	base := &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}, Labels: map[string]string{"tier": "gold", "trial": "yes"}}
	if _, err := l.Client.PutTenant(ctx, base, nil); err != nil {
		t.Fatal(err)
	}
	f := c.Followers()[0]
	out, err := f.Client.PatchTenant(ctx, "acme", map[string]any{"mirrors": []string{"eu-west", "ap-south"}, "labels": map[string]any{"trial": nil, "team": "edge"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}
	if out.HomeRegion != "us-east" || !reflect.DeepEqual(out.Mirrors, []string{"ap-south", "eu-west"}) || !reflect.DeepEqual(out.Tables, want) ||
		!reflect.DeepEqual(out.Labels, map[string]string{"tier": "gold", "team": "edge"}) {
		t.Fatalf("after the patch: %+v", out)
	}

	before, _, err := l.Client.Tenant(ctx, "acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		path   string
		body   any
		status int
		code   string
	}{
		{"/v1/tenants/acme", map[string]any{"mirrorz": []string{"x"}}, http.StatusBadRequest, "bad_patch"},
		{"/v1/tenants/acme", map[string]any{"mirrors": "eu-west"}, http.StatusBadRequest, ""},
		{"/v1/tenants/acme", map[string]any{"home_region": "Not A Region"}, http.StatusBadRequest, ""},
		{"/v1/tenants/acme", map[string]any{"id": "globex"}, http.StatusBadRequest, "id_mismatch"},
		{"/v1/tenants/nobody", map[string]any{"labels": map[string]any{"a": "b"}}, http.StatusNotFound, "tenant_not_found"},
		{fmt.Sprintf("/v1/tenants/acme?cas=%d", before.ModifyIndex-1), map[string]any{"labels": map[string]any{"a": "b"}}, http.StatusConflict, "cas_conflict"},
	} {
		r := do(t, f, http.MethodPatch, bad.path, bad.body, nil)
		if r.Status != bad.status {
			t.Fatalf("PATCH %s %v: %d %s, want %d", bad.path, bad.body, r.Status, r.Body, bad.status)
		}
		if bad.code != "" {
			wantError(t, r, bad.status, bad.code)
		}
	}
	after, _, err := l.Client.Tenant(ctx, "acme", nil)
	if err != nil || !reflect.DeepEqual(after, before) {
		t.Fatalf("refused patches changed the tenant: %+v -> %+v (%v)", before, after, err)
	}

	// Concurrent patches of different labels, through every server: each
	// is merged on the tenant as it is when applied, so none is lost.
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := 0; i < 30; i++ {
		n := c.Running()[i%len(c.Running())]
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := n.Client.PatchTenant(ctx, "acme", map[string]any{"labels": map[string]any{fmt.Sprintf("k%02d", i): "v"}}, nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent patch: %v", err)
		}
	}
	final, _, err := l.Client.Tenant(ctx, "acme", &client.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		if final.Labels[fmt.Sprintf("k%02d", i)] != "v" {
			t.Fatalf("label k%02d lost among concurrent patches: %v", i, final.Labels)
		}
	}
	if !reflect.DeepEqual(final.Mirrors, []string{"ap-south", "eu-west"}) {
		t.Fatalf("concurrent label patches changed the mirrors: %v", final.Mirrors)
	}
}
