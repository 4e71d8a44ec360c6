package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/serf/coordinate"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Latency budgets of P6, in milliseconds.
const (
	BudgetIntraRegionMS = fsm.LatencyBudgetIntraRegion
	BudgetInterRegionMS = 1000
)

// ProbeFreshness is how old a probe report may be and still count as a
// measurement (probes report every 5 s).
const ProbeFreshness = 30 * time.Second

// IntraRegion is P6's evidence for one region: its probe, run by an agent
// inside the region against the region's endpoint.
type IntraRegion struct {
	Region       string  `json:"region"`
	Measured     bool    `json:"measured"`
	ProbeOK      bool    `json:"probe_ok,omitempty"`
	LatencyMS    float64 `json:"latency_ms,omitempty"`
	WithinBudget bool    `json:"within_budget"`
	Agent        string  `json:"agent,omitempty"`
	ReportedAt   string  `json:"reported_at,omitempty"`
	Note         string  `json:"note,omitempty"`
}

// InterRegion is the estimated round trip between two regions: the
// closest pair of their nodes by Serf's Vivaldi coordinates.
type InterRegion struct {
	From         string  `json:"from"`
	To           string  `json:"to"`
	RTTMS        float64 `json:"rtt_ms"`
	Via          string  `json:"via"`
	WithinBudget bool    `json:"within_budget"`
}

// LatencyEvidence is P6's evidence.
type LatencyEvidence struct {
	BudgetIntraRegionMS float64       `json:"budget_intra_region_ms"`
	BudgetInterRegionMS float64       `json:"budget_inter_region_ms"`
	IntraRegion         []IntraRegion `json:"intra_region"`
	InterRegion         []InterRegion `json:"inter_region"`
	InterRegionSource   string        `json:"inter_region_source"`
	Unmeasured          []string      `json:"unmeasured"`
	Violations          []string      `json:"violations"`
}

// LatencyBudget is P6. Intra-region latency comes from the probe tasks'
// results in the FSM (fresh within ProbeFreshness); inter-region latency
// is estimated from Serf coordinates when nodes of two regions have them.
// It blocks on any measurement over budget or a failing probe, passes only
// when every registered region is measured, and is not_evaluated
// otherwise.
func LatencyBudget(ctx context.Context, in *Input) structs.PolicyResult {
	ev := LatencyEvidence{BudgetIntraRegionMS: BudgetIntraRegionMS, BudgetInterRegionMS: BudgetInterRegionMS,
		IntraRegion: []IntraRegion{}, InterRegion: []InterRegion{}, Unmeasured: []string{}, Violations: []string{},
		InterRegionSource: "estimated network round trip between the closest nodes of two regions, from Serf's Vivaldi coordinates"}
	var regions []string
	in.Source.FSM().Read(func(s *fsm.State) {
		for _, r := range s.SortedRegions() {
			regions = append(regions, r.Name)
			ev.IntraRegion = append(ev.IntraRegion, intraRegion(s, r.Name, in.Now))
		}
	})
	for _, ir := range ev.IntraRegion {
		switch {
		case !ir.Measured:
			ev.Unmeasured = append(ev.Unmeasured, ir.Region)
		case !ir.ProbeOK:
			ev.Violations = append(ev.Violations, fmt.Sprintf("%s: probe fails (%s)", ir.Region, ir.Note))
		case !ir.WithinBudget:
			ev.Violations = append(ev.Violations, fmt.Sprintf("%s: probe %.1f ms over the %d ms budget", ir.Region, ir.LatencyMS, BudgetIntraRegionMS))
		}
	}
	ev.InterRegion = interRegion(in.Source.Coordinates(), regions)
	for _, p := range ev.InterRegion {
		if !p.WithinBudget {
			ev.Violations = append(ev.Violations, fmt.Sprintf("%s-%s: estimated RTT %.1f ms over the %d ms budget", p.From, p.To, p.RTTMS, BudgetInterRegionMS))
		}
	}
	res := structs.PolicyResult{Evidence: ev}
	measured := len(regions) - len(ev.Unmeasured)
	switch {
	case len(ev.Violations) > 0:
		res.Status, res.Reason = structs.PolicyBlock, "over budget: "+strings.Join(ev.Violations, "; ")
	case len(regions) == 0:
		res.Status, res.Reason = structs.PolicyNotEvaluated, "no region is registered: nothing to measure"
	case len(ev.Unmeasured) > 0:
		res.Status = structs.PolicyNotEvaluated
		res.Reason = fmt.Sprintf("%d of %d regions have no fresh probe result (%s): the budget is not proven for them", len(ev.Unmeasured), len(regions), strings.Join(ev.Unmeasured, ", "))
	default:
		res.Status = structs.PolicyPass
		res.Reason = fmt.Sprintf("all %d regions probe within %d ms; %d inter-region pairs estimated within %d ms", measured, BudgetIntraRegionMS, len(ev.InterRegion), BudgetInterRegionMS)
	}
	return res
}

func intraRegion(s *fsm.State, region string, now time.Time) IntraRegion {
	ir := IntraRegion{Region: region}
	t := s.Tasks[fsm.ProbeTaskID(region)]
	if t == nil {
		ir.Note = "no probe task (the scheduler has not created it yet)"
		return ir
	}
	if len(t.Result) == 0 || t.ReportedAt == 0 {
		ir.Note = "the probe has not reported (status " + t.Status + "): no agent runs it"
		return ir
	}
	at := time.Unix(0, t.ReportedAt)
	ir.Agent, ir.ReportedAt = t.Agent, at.UTC().Format(time.RFC3339)
	if age := now.Sub(at); age > ProbeFreshness {
		ir.Note = fmt.Sprintf("the last probe report is %s old", age.Round(time.Second))
		return ir
	}
	var p fsm.ProbeResult
	if err := json.Unmarshal(t.Result, &p); err != nil {
		ir.Note = "the probe result does not decode: " + err.Error()
		return ir
	}
	ir.Measured, ir.ProbeOK, ir.LatencyMS = true, p.OK, p.LatencyMS
	ir.WithinBudget = p.OK && p.LatencyMS < BudgetIntraRegionMS
	if !p.OK {
		ir.Note = p.Error
	}
	return ir
}

// interRegion estimates the RTT between every pair of regions that have
// nodes with coordinates, from the closest pair of nodes.
func interRegion(coords []structs.Coordinate, regions []string) []InterRegion {
	registered := map[string]bool{}
	for _, r := range regions {
		registered[r] = true
	}
	byRegion := map[string][]structs.Coordinate{}
	for _, c := range coords {
		if registered[c.Region] {
			byRegion[c.Region] = append(byRegion[c.Region], c)
		}
	}
	var names []string
	for r := range byRegion {
		names = append(names, r)
	}
	sort.Strings(names)
	out := []InterRegion{}
	for i := 0; i < len(names); i++ {
		for j := i + 1; j < len(names); j++ {
			best := InterRegion{From: names[i], To: names[j], RTTMS: -1}
			for _, a := range byRegion[names[i]] {
				for _, b := range byRegion[names[j]] {
					ca, cb := toCoord(a), toCoord(b)
					if !ca.IsCompatibleWith(cb) {
						continue
					}
					d := float64(ca.DistanceTo(cb)) / float64(time.Millisecond)
					if best.RTTMS < 0 || d < best.RTTMS {
						best.RTTMS, best.Via = math.Round(d*1000)/1000, a.Node+"->"+b.Node
					}
				}
			}
			if best.RTTMS >= 0 {
				best.WithinBudget = best.RTTMS < BudgetInterRegionMS
				out = append(out, best)
			}
		}
	}
	return out
}

func toCoord(c structs.Coordinate) *coordinate.Coordinate {
	return &coordinate.Coordinate{Vec: c.Vec, Error: c.Error, Adjustment: c.Adjustment, Height: c.Height}
}
