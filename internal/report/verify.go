package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/structs"
)

// VerifyTenant is the tenant the registry verification creates, reads back
// from every server and deletes. (A region would need its own key and, to
// be deregistered, approvals: the verification must not leave anything
// behind or wait for people.)
const VerifyTenant = "report-verify"

// Verification is a component's live verification.
type Verification struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Steps []Step `json:"steps"`
}

// Step is one call of a verification.
type Step struct {
	Call   string `json:"call"`
	Status int    `json:"status,omitempty"`
	Result string `json:"result"`
	// Index is the state index the call returned (X-Atomfed-Index, or the
	// raft index of a write).
	Index uint64 `json:"index,omitempty"`
	// Output is the JSON the call answered, verbatim.
	Output json.RawMessage `json:"output,omitempty"`
}

func (v *Verification) fail(step Step, format string, args ...any) *Verification {
	step.Result = fmt.Sprintf(format, args...)
	v.Steps = append(v.Steps, step)
	v.OK, v.Error = false, step.Call+": "+step.Result
	return v
}

// verifyEnv is what verifications work with.
type verifyEnv struct {
	c      *client.Client
	opts   []client.Option // token and TLS, for clients of other servers
	token  string
	fed    *Federation
	policy *structs.PolicyStatus // set by verifyPolicy
}

var verifiers = map[string]func(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef){
	"registry":    verifyRegistry,
	"policy":      verifyPolicy,
	"replication": verifyReplication,
	"metrics":     verifyMetrics,
}

// verifyRegistry reads GET /region/list, creates VerifyTenant at home in
// the first region, waits until every server has it (stale reads, so each
// answers from its own state), deletes it and waits until it is gone
// everywhere. The two writes are the audit entries it cites.
func verifyRegistry(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	v := &Verification{OK: true}
	var refs []AuditRef
	regions, _, err := env.c.Regions(ctx, nil)
	if err != nil || len(regions) == 0 {
		return v.fail(Step{Call: "GET /v1/regions"}, "no region to place the verification tenant in (%v)", err), refs
	}
	ten := &fsm.Tenant{ID: VerifyTenant, HomeRegion: regions[0].Name, Labels: map[string]string{"purpose": "phase-report-verification"}}
	var got fsm.Tenant
	step := Step{Call: "PUT /v1/tenants/" + VerifyTenant}
	m, err := env.c.Do(ctx, http.MethodPut, "/v1/tenants/"+VerifyTenant, nil, ten, &got)
	step.Status = statusOf(m, err)
	if err != nil {
		return v.fail(step, "%v", err), refs
	}
	step.Index, step.Result = got.ModifyIndex, fmt.Sprintf("created at index %d (home %s)", got.ModifyIndex, ten.HomeRegion)
	v.Steps = append(v.Steps, step)
	refs = append(refs, AuditRef{Index: got.ModifyIndex, What: "PUT /v1/tenants/" + VerifyTenant})

	if err := onEveryServer(ctx, env, func(sc *client.Client) error {
		t, _, err := sc.Tenant(ctx, VerifyTenant, &client.QueryOptions{Consistency: "stale"})
		if err != nil {
			return err
		}
		if t.ModifyIndex < got.ModifyIndex {
			return fmt.Errorf("at modify_index %d, want %d", t.ModifyIndex, got.ModifyIndex)
		}
		return nil
	}); err != nil {
		return v.fail(Step{Call: "GET /v1/tenants/" + VerifyTenant + "?consistency=stale on every server"}, "%v", err), refs
	}
	v.Steps = append(v.Steps, Step{Call: "GET /v1/tenants/" + VerifyTenant + "?consistency=stale on every server",
		Result: fmt.Sprintf("present on all %d servers", len(env.fed.Servers))})

	var del struct {
		Index uint64 `json:"index"`
	}
	step = Step{Call: "DELETE /v1/tenants/" + VerifyTenant}
	m, err = env.c.Do(ctx, http.MethodDelete, "/v1/tenants/"+VerifyTenant, nil, nil, &del)
	step.Status = statusOf(m, err)
	if err != nil {
		return v.fail(step, "%v", err), refs
	}
	step.Index, step.Result = del.Index, fmt.Sprintf("deleted at index %d", del.Index)
	v.Steps = append(v.Steps, step)
	refs = append(refs, AuditRef{Index: del.Index, What: "DELETE /v1/tenants/" + VerifyTenant})

	if err := onEveryServer(ctx, env, func(sc *client.Client) error {
		_, _, err := sc.Tenant(ctx, VerifyTenant, &client.QueryOptions{Consistency: "stale"})
		if client.StatusOf(err) == http.StatusNotFound {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	}); err != nil {
		return v.fail(Step{Call: "GET /v1/tenants/" + VerifyTenant + "?consistency=stale on every server"}, "%v", err), refs
	}
	v.Steps = append(v.Steps, Step{Call: "GET /v1/tenants/" + VerifyTenant + "?consistency=stale on every server",
		Result: fmt.Sprintf("gone from all %d servers", len(env.fed.Servers))})

	var raw bytes.Buffer
	step = Step{Call: "GET /region/list"}
	m, err = env.c.Do(ctx, http.MethodGet, "/region/list", nil, nil, &raw)
	step.Status = statusOf(m, err)
	if err != nil {
		return v.fail(step, "%v", err), refs
	}
	step.Index = m.Index
	var list struct {
		Regions []struct {
			Name string `json:"name"`
		} `json:"regions"`
	}
	if err := json.Unmarshal(raw.Bytes(), &list); err != nil {
		return v.fail(step, "not JSON: %v", err), refs
	}
	var names []string
	for _, r := range list.Regions {
		names = append(names, r.Name)
	}
	step.Output = compact(raw.Bytes())
	step.Result = fmt.Sprintf("%d regions: %s", len(names), strings.Join(names, ", "))
	v.Steps = append(v.Steps, step)
	return v, refs
}

// verifyPolicy reads GET /v1/policy/status and checks that it reports
// P1-P7, each with a known status and a reason. It only reads.
func verifyPolicy(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	v := &Verification{OK: true}
	var raw bytes.Buffer
	step := Step{Call: "GET /v1/policy/status"}
	m, err := env.c.Do(ctx, http.MethodGet, "/v1/policy/status", nil, nil, &raw)
	step.Status = statusOf(m, err)
	if err != nil {
		return v.fail(step, "%v", err), nil
	}
	step.Index = m.Index
	var st structs.PolicyStatus
	if err := json.Unmarshal(raw.Bytes(), &st); err != nil {
		return v.fail(step, "not JSON: %v", err), nil
	}
	env.policy = &st
	want := []string{"P1", "P2", "P3", "P4", "P5", "P6", "P7"}
	if len(st.Policies) != len(want) {
		return v.fail(step, "%d policies, want P1-P7", len(st.Policies)), nil
	}
	for i, p := range st.Policies {
		switch {
		case p.ID != want[i]:
			return v.fail(step, "policy %d is %q, want %s", i+1, p.ID, want[i]), nil
		case p.Status != structs.PolicyPass && p.Status != structs.PolicyBlock && p.Status != structs.PolicyNotEvaluated:
			return v.fail(step, "%s has status %q", p.ID, p.Status), nil
		case p.Reason == "":
			return v.fail(step, "%s gives no reason", p.ID), nil
		}
	}
	step.Output = compact(raw.Bytes())
	step.Result = fmt.Sprintf("P1-P7 reported by %s: %d pass, %d block, %d not evaluated", st.Node, st.Summary.Pass, st.Summary.Block, st.Summary.NotEvaluated)
	v.Steps = append(v.Steps, step)
	return v, nil
}

// verifyReplication reads GET /v1/replication, the federation's
// replication summary (global tables per region with digests and drift,
// every replicated tenant's status), and checks that it answers with a
// known status for each. It only reads: replicating a tenant needs tables
// in the regions' databases, which a verification must not create.
func verifyReplication(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	v := &Verification{OK: true}
	var raw bytes.Buffer
	step := Step{Call: "GET /v1/replication"}
	m, err := env.c.Do(ctx, http.MethodGet, "/v1/replication", nil, nil, &raw)
	step.Status = statusOf(m, err)
	if err != nil {
		return v.fail(step, "%v", err), nil
	}
	step.Index = m.Index
	var sum fsm.ReplicationSummary
	if err := json.Unmarshal(raw.Bytes(), &sum); err != nil {
		return v.fail(step, "not JSON: %v", err), nil
	}
	known := map[string]bool{fsm.ReplStatusOK: true, fsm.ReplStatusPending: true, fsm.ReplStatusDegraded: true, fsm.ReplStatusError: true}
	if !known[sum.Status] {
		return v.fail(step, "unknown status %q", sum.Status), nil
	}
	for _, t := range sum.Tenants {
		if !known[t.Status] {
			return v.fail(step, "tenant %s has an unknown status %q", t.Tenant, t.Status), nil
		}
	}
	step.Output = compact(raw.Bytes())
	step.Result = fmt.Sprintf("status %s: %d replicated tenants, %d global tables, %d drifted tables", sum.Status, len(sum.Tenants), len(sum.GlobalTables), len(sum.Drift))
	v.Steps = append(v.Steps, step)
	return v, nil
}

// onEveryServer polls check against every server until it holds on all of
// them, for at most 15 s.
func onEveryServer(ctx context.Context, env *verifyEnv, check func(*client.Client) error) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		var errs []string
		for _, s := range env.fed.Servers {
			sc, err := client.New(s.URL, env.opts...)
			if err == nil {
				err = check(sc)
			}
			if err != nil {
				errs = append(errs, s.Node+": "+err.Error())
			}
		}
		if len(errs) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not on every server within 15s: %s", strings.Join(errs, "; "))
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func statusOf(m *client.Meta, err error) int {
	if m != nil {
		return m.Status
	}
	return client.StatusOf(err)
}

func compact(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return nil
	}
	return buf.Bytes()
}

// settle waits, for at most d, until the federation has a leader and
// every registered region a probe result, and reads who is in it. Without
// a leader it fails: nothing could be verified.
func settle(ctx context.Context, c *client.Client, opts []client.Option, d time.Duration) (*Federation, error) {
	fed := &Federation{Addr: c.Addr()}
	deadline := time.Now().Add(d)
	var lastErr error
	regions := 0
	for {
		l, err := c.Leader(ctx)
		if err == nil {
			fed.Leader = l.ID
			views, m, err := c.RegionViews(ctx, nil)
			if err == nil {
				fed.Index, regions = m.Index, len(views)
				var waiting []string
				for _, r := range views {
					if r.Health.Probe == nil {
						waiting = append(waiting, r.Name)
					}
				}
				if len(waiting) == 0 {
					fed.Settled = true
					break
				}
				lastErr = fmt.Errorf("no probe result yet for %s", strings.Join(waiting, ", "))
			} else {
				lastErr = err
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if fed.Leader == "" {
				return nil, fmt.Errorf("no leader at %s within %s: %v", c.Addr(), d, lastErr)
			}
			fed.Note = fmt.Sprintf("not settled within %s: %v", d, lastErr)
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	members, err := c.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("read GET /v1/members: %w", err)
	}
	withNodes := map[string]bool{}
	for _, m := range members {
		if m.Status == "alive" {
			withNodes[m.Region] = true
		}
	}
	if fed.Settled {
		waitCoordinates(ctx, c, min(regions, len(withNodes)), deadline)
	}
	for _, m := range members {
		if m.Status != "alive" {
			continue
		}
		n := nodeInfo(ctx, m, opts)
		if m.Role == "server" {
			fed.Servers = append(fed.Servers, n)
		} else {
			fed.Agents = append(fed.Agents, n)
		}
	}
	sort.Slice(fed.Servers, func(i, j int) bool { return fed.Servers[i].Node < fed.Servers[j].Node })
	sort.Slice(fed.Agents, func(i, j int) bool { return fed.Agents[i].Node < fed.Agents[j].Node })
	return fed, nil
}

// waitCoordinates waits, until deadline, for Serf coordinates of nodes of
// want regions (every region that has nodes), so that P6 estimates every
// inter-region pair. Serf learns them from its probes within seconds of a
// start.
func waitCoordinates(ctx context.Context, c *client.Client, want int, deadline time.Time) {
	for time.Now().Before(deadline) && ctx.Err() == nil {
		coords, err := c.Coordinates(ctx)
		regions := map[string]bool{}
		for _, co := range coords {
			regions[co.Region] = true
		}
		if err == nil && len(regions) >= want {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// nodeInfo reads a member's own /health.
func nodeInfo(ctx context.Context, m structs.Member, opts []client.Option) NodeInfo {
	n := NodeInfo{Node: m.Name, Role: m.Role, Region: m.Region, URL: m.Tags["http"]}
	if n.URL == "" {
		n.Error = "no http address gossiped"
		return n
	}
	hc, err := client.New(n.URL, opts...)
	if err != nil {
		n.Error = err.Error()
		return n
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var h struct {
		Version        string              `json:"version"`
		SimulationMode *bool               `json:"simulation_mode"`
		Simulation     *structs.Simulation `json:"simulation"`
	}
	if _, err := hc.Do(cctx, http.MethodGet, "/health", nil, nil, &h); err != nil {
		n.Error = err.Error()
		return n
	}
	n.Version, n.SimulationMode, n.Simulation = h.Version, h.SimulationMode, h.Simulation
	return n
}

// auditRefs reads the audit head (linearizable) and looks up the entries
// the verification created in the recent audit entries.
func auditRefs(ctx context.Context, c *client.Client, created []AuditRef) (AuditRefs, error) {
	a, err := c.Audit(ctx, nil)
	if err != nil {
		return AuditRefs{}, fmt.Errorf("read GET /v1/status/audit: %w", err)
	}
	out := AuditRefs{Head: a.Head, Index: a.Index, Created: []AuditRef{}}
	byIndex := map[uint64]fsm.AuditEntry{}
	for _, e := range a.Recent {
		byIndex[e.Index] = e
	}
	for _, r := range created {
		if e, ok := byIndex[r.Index]; ok {
			r.Type, r.Hash = e.Type, e.Hash
		} else {
			r.What += " (no longer among the recent audit entries)"
		}
		out.Created = append(out.Created, r)
	}
	return out, nil
}

// verifyMetrics checks the global metrics view on every server: each
// registered region's snapshot is fresh (GET /v1/metrics/regions), and
// GET /v1/metrics/federate names no missing region and marks every region
// up. It only reads.
func verifyMetrics(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	v := &Verification{OK: true}
	step := Step{Call: "GET /v1/metrics/regions on every server"}
	var last []byte
	err := onEveryServer(ctx, env, func(sc *client.Client) error {
		regions, err := sc.MetricsRegions(ctx, 0)
		if err != nil {
			return err
		}
		last, _ = json.Marshal(regions)
		if len(regions) == 0 {
			return fmt.Errorf("no region")
		}
		for _, r := range regions {
			if r.Status != "ok" {
				return fmt.Errorf("region %s: %s", r.Region, r.Status)
			}
		}
		return nil
	})
	if err != nil {
		return v.fail(step, "%v", err), nil
	}
	step.Status, step.Output, step.Result = http.StatusOK, compact(last), "every region's snapshot is fresh on every server"
	v.Steps = append(v.Steps, step)
	step = Step{Call: "GET /v1/metrics/federate?match[]=atomfed_scrape_up on every server"}
	err = onEveryServer(ctx, env, func(sc *client.Client) error {
		var out bytes.Buffer
		res, err := sc.Federate(ctx, client.FederateOptions{Match: []string{"atomfed_scrape_up"}, Timeout: 2 * time.Second}, &out)
		if err != nil {
			return err
		}
		if res.Missing != "" || res.Incomplete != "" {
			return fmt.Errorf("missing %q, incomplete %q", res.Missing, res.Incomplete)
		}
		up := 0
		for _, line := range strings.Split(out.String(), "\n") {
			if !strings.HasPrefix(line, "atomfed_region_scrape_up{") {
				continue
			}
			if !strings.HasSuffix(line, " 1") {
				return fmt.Errorf("down in the view: %s", line)
			}
			up++
		}
		if up == 0 {
			return fmt.Errorf("no atomfed_region_scrape_up in the view")
		}
		return nil
	})
	if err != nil {
		return v.fail(step, "%v", err), nil
	}
	step.Status, step.Result = http.StatusOK, "every region merged and up, nothing missing, on every server"
	v.Steps = append(v.Steps, step)
	return v, nil
}
