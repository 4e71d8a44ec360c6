package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/routing"
)

// routeParams are the parameters of GET /v1/route.
type routeParams struct {
	tenant, op string
	// fromRegion is the region ranked from (empty with fromPoint); explicit
	// says whether the request named it (then it must be registered).
	fromRegion string
	explicit   bool
	fromPoint  *fsm.Location
	budget     int64
}

func parseRouteParams(r *http.Request, self string) (routeParams, error) {
	q := r.URL.Query()
	p := routeParams{tenant: q.Get("tenant"), op: q.Get("op"), budget: routing.DefaultMaxStalenessMS}
	switch {
	case p.tenant == "":
		return p, badRequest("missing_tenant", "give ?tenant=<tenant id> to route")
	case !fsm.ValidTenantID(p.tenant):
		return p, badRequest("invalid_tenant", "tenant "+quote(p.tenant)+" is not a tenant id (lower-case letters, digits, '-' or '_')")
	case p.op == "":
		return p, badRequest("missing_op", "give ?op=read or ?op=write")
	case p.op != routing.OpRead && p.op != routing.OpWrite:
		return p, badRequest("invalid_op", "op "+quote(p.op)+" must be read or write")
	}
	if raw := q.Get("max_staleness_ms"); raw != "" {
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n < 0 || n > routing.MaxStalenessMS {
			return p, badRequest("invalid_max_staleness", fmt.Sprintf("max_staleness_ms %s must be a whole number of milliseconds from 0 (the home only) to %d", quote(raw), routing.MaxStalenessMS))
		}
		p.budget = n
	}
	from := q.Get("from")
	switch {
	case from == "":
		p.fromRegion = self
	case strings.Contains(from, ","):
		loc, err := parseLatLon(from)
		if err != nil {
			return p, err
		}
		p.fromPoint = loc
	case fsm.ValidRegionName(from):
		p.fromRegion, p.explicit = from, true
	default:
		return p, badRequest("invalid_from", "from "+quote(from)+" must be a region name or a location lat,lon (e.g. 53.35,-6.26)")
	}
	return p, nil
}

func parseLatLon(s string) (*fsm.Location, error) {
	bad := badRequest("invalid_from", "from "+quote(s)+" must be a location lat,lon with lat in [-90, 90] and lon in [-180, 180] (e.g. 53.35,-6.26), or a region name")
	lat, lon, _ := strings.Cut(s, ",")
	la, err1 := strconv.ParseFloat(strings.TrimSpace(lat), 64)
	lo, err2 := strconv.ParseFloat(strings.TrimSpace(lon), 64)
	if err1 != nil || err2 != nil || !(la >= -90 && la <= 90) || !(lo >= -180 && lo <= 180) {
		return nil, bad
	}
	return &fsm.Location{Lat: la, Lon: lo}, nil
}

// route answers GET /v1/route: where a tenant's read or write goes
// (routing.Decide). It answers from this server's state (consistency
// stale unless the request asks otherwise), so an edge may ask any server
// on every request, and blocks on ?index= until the answer's inputs
// change: the tenant's placement, a region of it (registration, agents,
// probe), a mirror's report or its switchover. While a switchover holds
// the tenant (fencing to promoting, or rolling back) a write is answered
// 503 switchover_in_progress with Retry-After; reads are routed as usual.
func (a *API) route(w http.ResponseWriter, r *http.Request) {
	p, err := parseRouteParams(r, a.c.Region())
	if err != nil {
		writeError(w, err)
		return
	}
	// Serf coordinates are not FSM state: measured once, outside the
	// FSM's lock (NearestRegions reads the FSM itself).
	rtt := map[string]float64{}
	if p.fromRegion != "" {
		if ranked, err := a.c.NearestRegions(p.fromRegion); err == nil {
			for _, rr := range ranked {
				rtt[rr.Region] = rr.RTTMillis
			}
		}
	}
	a.readAs(w, r, Stale, func(s *view) (any, uint64, error) {
		tIdx := s.TableIndex(fsm.TableTenants)
		s.TableIndex(fsm.TableRegions)
		s.TableIndex(fsm.TableAgents)
		s.TableIndex(fsm.TableTasks)
		t := s.Tenants[p.tenant]
		if t == nil {
			return nil, tIdx, notFound("tenant_not_found", "tenant "+quote(p.tenant)+" does not exist")
		}
		from := fsm.Location{}
		label := p.fromRegion
		switch {
		case p.fromPoint != nil:
			from = *p.fromPoint
			label = strconv.FormatFloat(from.Lat, 'f', -1, 64) + "," + strconv.FormatFloat(from.Lon, 'f', -1, 64)
		case s.Regions[p.fromRegion] != nil:
			from = s.Regions[p.fromRegion].Location
		case p.explicit:
			return nil, tIdx, badRequest("unknown_from_region", "from region "+quote(p.fromRegion)+" is not registered: give a registered region or a location lat,lon")
		}
		fromKnown := p.fromPoint != nil || routing.KnownLocation(from)
		idx := t.ModifyIndex
		s.TableIndex(fsm.TableSwitchovers)
		s.TableIndex(fsm.TableRegionOps) // routeCandidate reads the maintenance flags
		if sw := s.Switchover(t.ID); sw != nil {
			idx = maxIndex(idx, sw.ModifyIndex)
			if p.op == routing.OpWrite && sw.InFlight() {
				// The old home is fenced until the commit (or the
				// rollback lifts the fence): no region takes the write.
				return nil, idx, unavailable(fsm.CodeSwitchoverInProgress, fmt.Sprintf(
					"tenant %s is switching over from %s to %s (phase %s): its writes are refused until the new home takes them; retry shortly",
					t.ID, sw.From, sw.To, sw.Phase))
			}
		}
		regions := append([]string{t.HomeRegion}, t.Mirrors...)
		cands := make([]routing.Candidate, 0, len(regions))
		for i, name := range regions {
			c, ri := routeCandidate(s.State, t.ID, name, i == 0)
			idx = maxIndex(idx, ri)
			c.RTTMS, c.DistanceKM = -1, -1
			if v, ok := rtt[name]; ok {
				c.RTTMS = v
			}
			if reg := s.Regions[name]; reg != nil && fromKnown && routing.KnownLocation(reg.Location) {
				c.DistanceKM = routing.DistanceKM(from, reg.Location)
			}
			cands = append(cands, c)
		}
		d := routing.Decide(routing.Request{Op: p.op, MaxStalenessMS: p.budget, Candidates: cands})
		return wire.Route{Tenant: t.ID, Op: p.op, From: label, MaxStalenessMS: p.budget, HomeRegion: t.HomeRegion, Epoch: t.Epoch, RouteDecision: d}, idx, nil
	})
}

// routeCandidate describes one region of a tenant for routing, and the
// largest modify index of what it was built from: the region, its agents
// and probe, and (a mirror) its subscriber task. The answer's index is the
// largest of these and the tenant's, so a blocking route wakes for changes
// of this tenant's regions only, not for every task report of the
// federation.
func routeCandidate(s *fsm.State, tenant, name string, home bool) (routing.Candidate, uint64) {
	c := routing.Candidate{Region: name, Home: home}
	var idx uint64
	if reg := s.Regions[name]; reg != nil {
		c.AppURL, c.Status, idx = reg.AppURL, reg.Status, reg.ModifyIndex
	}
	if o := s.RegionOps[name]; o != nil {
		// An operator's maintenance counts as the region's own status.
		if o.Maintenance {
			c.Status = fsm.RegionMaintenance
		}
		idx = maxIndex(idx, o.ModifyIndex)
	}
	h := s.RegionHealth(name)
	c.Health, c.HealthReason = h.Status, h.Reason
	for _, ag := range s.Agents {
		if ag.Region == name {
			idx = maxIndex(idx, ag.ModifyIndex)
		}
	}
	if pt := s.Tasks[fsm.ProbeTaskID(name)]; pt != nil {
		idx = maxIndex(idx, pt.ModifyIndex)
	}
	if home {
		return c, idx
	}
	task := s.Tasks[fsm.TenantSubscriberTaskID(tenant, name)]
	if task == nil {
		return c, idx
	}
	idx = maxIndex(idx, task.ModifyIndex)
	var res fsm.SubscriberResult
	if task.Agent == "" || len(task.Result) == 0 || json.Unmarshal(task.Result, &res) != nil {
		return c, idx
	}
	c.MirrorState, c.LagMS = res.State, res.LagSeconds*1000
	c.TablesReady = len(res.Tables) > 0
	for _, tb := range res.Tables {
		c.TablesReady = c.TablesReady && tb.State == "ready"
	}
	return c, idx
}
