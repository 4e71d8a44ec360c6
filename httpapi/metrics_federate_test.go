package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestMetricsFederate: in-process agents run their region's metrics task
// and push to every server; every server merges the regions, names a
// registered region without an agent as missing, and refuses bad
// parameters with their codes.
func TestMetricsFederate(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	for _, r := range []string{"r1", "r2", "r3"} {
		mustWrite(t, l, http.MethodPut, "/v1/regions/"+r, regionJSON(r), http.StatusCreated)
	}
	c.AddAgent("r1-a1", "r1")
	c.AddAgent("r2-a1", "r2")
	q := url.Values{"match[]": {`{__name__=~"atomfed_scrape_up|atomfed_region_scrape_up"}`}}
	for _, n := range c.Nodes {
		testutil.Eventually(t, 30*time.Second, func() error {
			r := n.Do(t, http.MethodGet, "/v1/metrics/federate?"+q.Encode(), nil, nil)
			body := string(r.Body)
			switch {
			case r.Status != http.StatusOK:
				return fmt.Errorf("%s: %d %s", n.ID, r.Status, body)
			case r.Header.Get(client.HeaderMissingRegions) != "r3":
				return fmt.Errorf("%s: missing %q", n.ID, r.Header.Get(client.HeaderMissingRegions))
			case !strings.Contains(body, `atomfed_region_scrape_up{region="r1"} 1`), !strings.Contains(body, `atomfed_region_scrape_up{region="r2"} 1`),
				!strings.Contains(body, `atomfed_region_scrape_up{region="r3"} 0`):
				return fmt.Errorf("%s: regions not as expected:\n%s", n.ID, body)
			case !strings.Contains(body, `atomfed_scrape_up{instance="r1-a1",region="r1",source="node"}`):
				return fmt.Errorf("%s: no health series of r1's scrape:\n%s", n.ID, body)
			}
			return nil
		})
	}
	for _, bad := range []struct{ query, code string }{
		{"", "bad_match"},
		{"match[]=%7B", "bad_match"},
		{"match[]=" + strings.Repeat("a", 5000), "bad_match"},
		{"match[]=up&timeout=0s", "bad_timeout"},
		{"match[]=up&timeout=5m", "bad_timeout"},
		{"match[]=up&max_age=soon", "bad_max_age"},
	} {
		wantError(t, l.Do(t, http.MethodGet, "/v1/metrics/federate?"+bad.query, nil, nil), http.StatusBadRequest, bad.code)
	}
	wantError(t, l.Do(t, http.MethodGet, "/v1/metrics/regions?max_age=0s", nil, nil), http.StatusBadRequest, "bad_max_age")

	// /global-status carries each region's summary of the view.
	var gs wire.GlobalStatus
	r := l.Do(t, http.MethodGet, "/global-status", nil, nil)
	if err := json.Unmarshal(r.Body, &gs); err != nil || len(gs.Metrics) != 3 {
		t.Fatalf("/global-status: %d %v %s", r.Status, err, r.Body)
	}
	if m := gs.Metrics; m[0].Region != "r1" || m[0].Scrape != "ok" || m[2].Region != "r3" || m[2].Scrape != "missing" || len(m[2].Stale) != 3 {
		t.Fatalf("/global-status metrics: %+v", m)
	}
}
