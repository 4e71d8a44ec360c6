package routing

import (
	"math"
	"strings"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

func home(name string, rtt, km float64) Candidate {
	return Candidate{Region: name, AppURL: "https://app." + name + ".example.com", Home: true, Status: fsm.RegionActive,
		Health: fsm.HealthHealthy, RTTMS: rtt, DistanceKM: km}
}

func mirror(name string, rtt, km, lagMS float64) Candidate {
	return Candidate{Region: name, AppURL: "https://app." + name + ".example.com", Status: fsm.RegionActive, Health: fsm.HealthHealthy,
		MirrorState: fsm.ReplStreaming, TablesReady: true, LagMS: lagMS, RTTMS: rtt, DistanceKM: km}
}

func order(d wire.RouteDecision) string {
	out := []string{d.Region}
	for _, a := range d.Alternatives {
		mark := ""
		if !a.Eligible {
			mark = "!"
		}
		out = append(out, mark+a.Region)
	}
	return strings.Join(out, " ")
}

// TestDecide is the ranking: given the regions, how near each is, each
// mirror's lag and the budget, the order of the answer and its reasons.
func TestDecide(t *testing.T) {
	down := mirror("eu-west", 1, -1, 0)
	down.Health, down.HealthReason = fsm.HealthDown, "no agent of the region is alive"
	maint := mirror("eu-west", 1, -1, 0)
	maint.Status = fsm.RegionMaintenance
	syncing := mirror("eu-west", 1, -1, 0)
	syncing.MirrorState, syncing.TablesReady = fsm.ReplSyncing, false
	stopped := mirror("eu-west", 1, -1, 300)
	stopped.MirrorState = fsm.ReplDown
	stoppedCopying := stopped
	stoppedCopying.TablesReady = false
	unreported := mirror("eu-west", 1, -1, 0)
	unreported.MirrorState = ""
	homeDown := home("us-east", 80, -1)
	homeDown.Health, homeDown.HealthReason = fsm.HealthDown, "every agent of the region has left"
	noApp := mirror("eu-west", 1, -1, 5)
	noApp.AppURL = ""

	for _, c := range []struct {
		name   string
		op     string
		budget int64
		cands  []Candidate
		order  string
		reason string // a substring of the answer's reason
	}{
		{"write goes home even when a mirror is nearer", OpWrite, 1000,
			[]Candidate{home("us-east", 80, -1), mirror("eu-west", 1, -1, 0)}, "us-east", "home (the only writable copy)"},
		{"write to a down home still names the home", OpWrite, 1000,
			[]Candidate{homeDown, mirror("eu-west", 1, -1, 0)}, "us-east", "writes fail until it is back"},
		{"read: nearest mirror within budget", OpRead, 500,
			[]Candidate{home("us-east", 80, -1), mirror("eu-west", 1, -1, 120), mirror("ap-south", 150, -1, 10)},
			"eu-west us-east ap-south", "nearest mirror within staleness budget (lag 120 ms ≤ 500 ms)"},
		{"read: lag over budget falls back to the next, then the home", OpRead, 100,
			[]Candidate{home("us-east", 80, -1), mirror("eu-west", 1, -1, 120), mirror("ap-south", 150, -1, 10)},
			"us-east ap-south !eu-west", "nearer skipped: eu-west: lag 120 ms > budget 100 ms"},
		{"read: home nearest", OpRead, 1000,
			[]Candidate{home("us-east", 0, -1), mirror("eu-west", 70, -1, 0)}, "us-east eu-west", "home, the nearest region"},
		{"read: budget 0 is the home only", OpRead, 0,
			[]Candidate{home("us-east", 80, -1), mirror("eu-west", 1, -1, 0)}, "us-east !eu-west", "staleness budget 0 ms"},
		{"read: down mirror skipped", OpRead, 1000,
			[]Candidate{home("us-east", 80, -1), down}, "us-east !eu-west", "region is down: no agent of the region is alive"},
		{"read: mirror in maintenance skipped", OpRead, 1000,
			[]Candidate{home("us-east", 80, -1), maint}, "us-east !eu-west", "region is in maintenance"},
		{"read: syncing mirror skipped", OpRead, 1000,
			[]Candidate{home("us-east", 80, -1), syncing}, "us-east !eu-west", "mirror is syncing, not a complete copy"},
		{"read: unreported mirror skipped", OpRead, 1000,
			[]Candidate{home("us-east", 80, -1), unreported}, "us-east !eu-west", "no replication status yet"},
		{"read: stopped mirror within budget serves (its lag is the time since it streamed)", OpRead, 1000,
			[]Candidate{home("us-east", 80, -1), stopped}, "eu-west us-east", "not streaming now"},
		{"read: stopped mirror that never finished its copy is skipped", OpRead, 1000,
			[]Candidate{home("us-east", 80, -1), stoppedCopying}, "us-east !eu-west", "mirror is down, not a complete copy"},
		{"read: down home, mirror within budget", OpRead, 1000,
			[]Candidate{homeDown, mirror("eu-west", 100, -1, 10)}, "eu-west !us-east", "nearest mirror"},
		{"read: down home, no mirror within budget: the home anyway", OpRead, 5,
			[]Candidate{homeDown, mirror("eu-west", 1, -1, 10)}, "us-east !eu-west", "home, though region is down"},
		{"read: no RTT, by distance", OpRead, 1000,
			[]Candidate{home("us-east", -1, 5000), mirror("eu-west", -1, 100, 0), mirror("ap-south", -1, 7000, 0)},
			"eu-west us-east ap-south", "nearest mirror"},
		{"read: a known RTT ranks before an unknown one", OpRead, 1000,
			[]Candidate{home("us-east", 90, 5000), mirror("eu-west", -1, 10, 0)}, "us-east eu-west", "home, the nearest region"},
		{"read: equal proximity prefers the home", OpRead, 1000,
			[]Candidate{mirror("eu-west", -1, -1, 0), home("us-east", -1, -1)}, "us-east eu-west", "home, the nearest region"},
		{"read: no app_url is routable and says so", OpRead, 1000,
			[]Candidate{home("us-east", 80, -1), noApp}, "eu-west us-east", "no app_url registered"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(Request{Op: c.op, MaxStalenessMS: c.budget, Candidates: c.cands})
			if got := order(d); got != c.order {
				t.Errorf("order %q, want %q (reason %q)", got, c.order, d.Reason)
			}
			if !strings.Contains(d.Reason, c.reason) {
				t.Errorf("reason %q, want it to contain %q", d.Reason, c.reason)
			}
			for _, a := range d.Alternatives {
				if a.Reason == "" {
					t.Errorf("alternative %s has no reason", a.Region)
				}
			}
			if c.op == OpWrite && len(d.Alternatives) != 0 {
				t.Errorf("a write has alternatives %v", d.Alternatives)
			}
		})
	}
}

// TestDecideReportsLagAndProximity: the alternatives carry each mirror's
// lag and the proximity the ranking used; the home carries no lag.
func TestDecideReportsLagAndProximity(t *testing.T) {
	d := Decide(Request{Op: OpRead, MaxStalenessMS: 1000, Candidates: []Candidate{home("us-east", 80, 5500.4), mirror("eu-west", 1.5, -1, 42)}})
	if d.Region != "eu-west" || d.AppURL != "https://app.eu-west.example.com" {
		t.Fatalf("answer %+v", d)
	}
	h := d.Alternatives[0]
	if h.Region != "us-east" || !h.Home || !h.Eligible || h.LagMS != nil || h.RTTMS == nil || *h.RTTMS != 80 || h.DistanceKM == nil || *h.DistanceKM != 5500 {
		t.Fatalf("home alternative %+v", h)
	}
	d = Decide(Request{Op: OpRead, MaxStalenessMS: 10, Candidates: []Candidate{home("us-east", 80, -1), mirror("eu-west", 1.5, -1, 42)}})
	m := d.Alternatives[0]
	if m.Region != "eu-west" || m.Eligible || m.LagMS == nil || *m.LagMS != 42 || m.DistanceKM != nil {
		t.Fatalf("mirror alternative %+v", m)
	}
}

func TestDistanceKM(t *testing.T) {
	dublin, virginia := fsm.Location{Lat: 53.35, Lon: -6.26}, fsm.Location{Lat: 39.04, Lon: -77.49}
	if d := DistanceKM(dublin, virginia); math.Abs(d-5460) > 60 {
		t.Fatalf("Dublin-Virginia %.0f km, want about 5460", d)
	}
	if d := DistanceKM(dublin, dublin); d != 0 {
		t.Fatalf("a point to itself: %v", d)
	}
}
