package edge

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	tu "github.com/atomcloud/atomfed/internal/testing/testutil"
)

// hold makes the source answer tenant's op route 503 switchover_in_progress
// (on = true) or route it again.
func (f *fakeSource) hold(tenant, op string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held == nil {
		f.held = map[string]bool{}
	}
	f.held[tenant+":"+op] = on
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

// TestEdgeHoldsWritesDuringASwitchover: while atomfed answers a tenant's
// write route 503 switchover_in_progress, the edge answers its writes 503
// with Retry-After and sends them nowhere; reads still go to their region;
// when the route comes back (the new home), writes go there.
func TestEdgeHoldsWritesDuringASwitchover(t *testing.T) {
	eu, us := newApp(t, "eu-west"), newApp(t, "us-east")
	src := newFakeSource()
	src.set("acme", opRead, route("eu-west", eu.URL))
	src.set("acme", opWrite, route("us-east", us.URL))
	h := newHarness(t, src, Config{})
	if code, _, hdr := h.do(http.MethodPost, "acme", "/w"); code != 200 || hdr.Get(HeaderRegion) != "us-east" {
		t.Fatalf("write before the switchover: %d %s", code, hdr.Get(HeaderRegion))
	}
	src.hold("acme", opWrite, true)
	before := us.hits.Load() + eu.hits.Load()
	tu.Eventually(t, 5*time.Second, func() error {
		code, body, hdr := h.do(http.MethodPost, "acme", "/w")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, `"switchover_in_progress"`) || hdr.Get("Retry-After") == "" {
			return fmt.Errorf("write during the switchover: %d %s (Retry-After %q)", code, body, hdr.Get("Retry-After"))
		}
		return nil
	})
	if n := us.hits.Load() + eu.hits.Load() - before; n > 1 {
		t.Fatalf("%d writes reached an application while held (at most the one before the hold was seen)", n)
	}
	held := us.hits.Load() + eu.hits.Load()
	for i := 0; i < 3; i++ {
		if code, _, _ := h.do(http.MethodPost, "acme", "/w"); code != http.StatusServiceUnavailable {
			t.Fatalf("held write answered %d", code)
		}
	}
	if us.hits.Load()+eu.hits.Load() != held {
		t.Fatal("a held write reached an application")
	}
	if code, _, hdr := h.do(http.MethodGet, "acme", "/r"); code != 200 || hdr.Get(HeaderRegion) != "eu-west" {
		t.Fatalf("read during the switchover: %d %s", code, hdr.Get(HeaderRegion))
	}
	// The commit: the write route names the new home.
	src.mu.Lock()
	src.held["acme:"+opWrite] = false
	src.mu.Unlock()
	src.set("acme", opWrite, route("eu-west", eu.URL))
	tu.Eventually(t, 5*time.Second, func() error {
		if code, _, hdr := h.do(http.MethodPost, "acme", "/w"); code != 200 || hdr.Get(HeaderRegion) != "eu-west" {
			return fmt.Errorf("write after the commit: %d %s", code, hdr.Get(HeaderRegion))
		}
		return nil
	})
}
