package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/structs"
)

// The objects verifications create and delete again. Each is named so that
// an operator can tell it apart, and a leftover of an interrupted run is
// removed by the next one before it starts.
const (
	// VerifyRegion is the staging region the registry verification
	// registers (signed with a key made for the run), reads back from
	// every server and deregisters.
	VerifyRegion = "report-verify"
	// VerifyForgedRegion is the region a forged registration names: it
	// must be refused and never exist.
	VerifyForgedRegion = "report-verify-forged"
	// VerifyProdRegion is the production region the policy verification
	// registers and deregisters through m-of-n approvals.
	VerifyProdRegion = "report-verify-prod"
	// VerifyTenant is the tenant the replication verification replicates.
	VerifyTenant = "report-verify"
)

// Verification is a component's live verification.
type Verification struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Steps []Step `json:"steps"`
	// Simulated names the parts the verification depends on that run
	// simulated on the federation (e.g. "replication: agents of eu-west
	// have no region database"): the calls ran, but not against the real
	// part, so a success is a pass_simulated, never a pass.
	Simulated []string `json:"simulated,omitempty"`
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

func (v *Verification) ok(step Step, format string, args ...any) {
	step.Result = fmt.Sprintf(format, args...)
	v.Steps = append(v.Steps, step)
}

// verifyEnv is what verifications work with.
type verifyEnv struct {
	c      *client.Client
	opts   []client.Option // token and TLS, for clients of other servers
	token  string
	fed    *Federation
	policy *structs.PolicyStatus // set by verifyPolicy
	// approvers sign approvals (the policy verification); regionDBs are
	// the regions' databases (the replication verifications).
	approvers []*signing.Signer
	regionDBs map[string]string
	// timeout bounds each wait of a verification.
	timeout time.Duration
}

// verification is a component's live verification and the parts (as
// nodes list them simulated in /health) it depends on: when a node runs
// one simulated, the verification did not run against the real part, and
// its success is a pass_simulated that names it.
type verification struct {
	run   func(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef)
	needs []string
}

var verifiers = map[string]verification{
	"registry":           {verifyRegistry, nil},
	"policy":             {verifyPolicy, []string{"signing", "secrets"}},
	"federation_sync":    {verifyFederationSync, []string{"replication"}},
	"tenant_replication": {verifyTenantReplication, []string{"replication", "tenant_rls"}},
	"metrics":            {verifyMetrics, nil},
	"backups":            {verifyBackups, []string{"backups"}},
	"edge":               {verifyEdge, []string{"replication"}},
}

// simulatedParts lists, once per role, part and reason, the parts of
// parts that nodes of f run simulated: "agents: replication (postgres
// MISSING) on eu-west-a1, us-east-a1".
func simulatedParts(f *Federation, parts []string) []string {
	type key struct{ role, part, because string }
	nodes := map[key][]string{}
	var order []key
	for _, n := range append(append([]NodeInfo{}, f.Servers...), f.Agents...) {
		if n.Simulation == nil {
			continue
		}
		for _, p := range n.Simulation.Simulated {
			if !slices.Contains(parts, p.Part) {
				continue
			}
			k := key{n.Role, p.Part, p.Because}
			if nodes[k] == nil {
				order = append(order, k)
			}
			nodes[k] = append(nodes[k], n.Node)
		}
	}
	var out []string
	for _, k := range order {
		out = append(out, fmt.Sprintf("%ss: %s (%s) on %s", k.role, k.part, k.because, strings.Join(nodes[k], ", ")))
	}
	return out
}

// signedClient is a client of the federation that signs with s.
func (env *verifyEnv) signedClient(s *signing.Signer) (*client.Client, error) {
	return client.New(env.c.Addr(), append(append([]client.Option{}, env.opts...), client.WithSigner(s))...)
}

// newRegionClient removes what an interrupted run left of region name and
// returns a client signing with a key made for this run, as a region's
// first registration is signed. On error v has failed.
func newRegionClient(ctx context.Context, env *verifyEnv, v *Verification, name string) (*client.Client, *signing.Signer, error) {
	if gone, err := removeLeftover(ctx, env, name); err != nil {
		v.fail(Step{Call: "DELETE /v1/regions/" + name}, "a region %s left by an earlier run could not be removed: %v", name, err)
		return nil, nil, err
	} else if gone {
		v.ok(Step{Call: "DELETE /v1/regions/" + name}, "removed a region %s left by an earlier, interrupted run", name)
	}
	key, err := signing.NewSigner()
	if err != nil {
		v.fail(Step{Call: "generate a signing key"}, "%v", err)
		return nil, nil, err
	}
	sc, err := env.signedClient(key)
	if err != nil {
		v.fail(Step{Call: "client"}, "%v", err)
		return nil, nil, err
	}
	return sc, key, nil
}

// verifyRegistry registers the staging region VerifyRegion, signed with a
// key made for this run (a first registration proves possession of the
// key, P2), waits until every server has it (stale reads, so each answers
// from its own state) and lists it, deregisters it and waits until it is
// gone everywhere. The two writes are the audit entries it cites.
func verifyRegistry(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	v := &Verification{OK: true}
	var refs []AuditRef
	sc, key, err := newRegionClient(ctx, env, v, VerifyRegion)
	if err != nil {
		return v, refs
	}
	reg := &fsm.Region{Name: VerifyRegion, URL: "https://report-verify.invalid:8401", Tier: fsm.TierStaging,
		Labels: map[string]string{"purpose": "phase-report-verification"}}
	step := Step{Call: "POST /region/register " + VerifyRegion + " (signed, key " + key.KeyID + ")"}
	got, pending, err := sc.RegisterRegionGated(ctx, reg, nil)
	switch {
	case err != nil:
		step.Status = client.StatusOf(err)
		return v.fail(step, "%v", err), refs
	case pending != nil:
		return v.fail(step, "a staging region's registration waits for approval %s: the policy gates staging regions; the verification needs one that registers directly", pending.ID), refs
	case got.Name != VerifyRegion || got.ModifyIndex == 0:
		return v.fail(step, "answered region %q at modify_index %d", got.Name, got.ModifyIndex), refs
	}
	step.Status, step.Index = http.StatusOK, got.ModifyIndex
	v.ok(step, "registered at index %d", got.ModifyIndex)
	refs = append(refs, AuditRef{Index: got.ModifyIndex, What: "POST /region/register " + VerifyRegion})

	call := "GET /v1/regions/" + VerifyRegion + "?consistency=stale on every server"
	if err := onEveryServer(ctx, env, func(c *client.Client) error {
		r, _, err := c.Region(ctx, VerifyRegion, &client.QueryOptions{Consistency: "stale"})
		if err != nil {
			return err
		}
		if r.ModifyIndex < got.ModifyIndex || r.URL != reg.URL {
			return fmt.Errorf("at modify_index %d with url %q, want %d and %q", r.ModifyIndex, r.URL, got.ModifyIndex, reg.URL)
		}
		return nil
	}); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "present on all %d servers", len(env.fed.Servers))

	listed, step, err := regionList(ctx, env)
	if err != nil {
		return v.fail(step, "%v", err), refs
	}
	if !slices.Contains(listed, VerifyRegion) {
		return v.fail(step, "%s is not in the seed list: %s", VerifyRegion, strings.Join(listed, ", ")), refs
	}
	v.ok(step, "%d regions, %s among them", len(listed), VerifyRegion)

	idx, err := deregister(ctx, env, v, VerifyRegion)
	if err != nil {
		return v, refs
	}
	refs = append(refs, AuditRef{Index: idx, What: "region " + VerifyRegion + " deregistered"})
	call = "GET /v1/regions/" + VerifyRegion + "?consistency=stale on every server"
	if err := goneEverywhere(ctx, env, VerifyRegion); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "gone from all %d servers", len(env.fed.Servers))

	listed, step, err = regionList(ctx, env)
	if err != nil {
		return v.fail(step, "%v", err), refs
	}
	if slices.Contains(listed, VerifyRegion) {
		return v.fail(step, "%s is still in the seed list", VerifyRegion), refs
	}
	v.ok(step, "%d regions: %s", len(listed), strings.Join(listed, ", "))
	return v, refs
}

// deregister deletes region name: at once, or through the approval the
// policy asks for (region.deregister), approved with the approver keys. It
// records its steps in v; on error v has failed. It returns the index at
// which the region was deleted.
func deregister(ctx context.Context, env *verifyEnv, v *Verification, name string) (uint64, error) {
	step := Step{Call: "DELETE /v1/regions/" + name}
	var raw json.RawMessage
	m, err := env.c.Do(ctx, http.MethodDelete, "/v1/regions/"+name, nil, nil, &raw)
	step.Status = statusOf(m, err)
	if err != nil {
		v.fail(step, "%v", err)
		return 0, err
	}
	if m.Status != http.StatusAccepted {
		var del struct {
			Index uint64 `json:"index"`
		}
		_ = json.Unmarshal(raw, &del)
		step.Index = del.Index
		v.ok(step, "deregistered at index %d", del.Index)
		return del.Index, nil
	}
	var a fsm.Approval
	if err := json.Unmarshal(raw, &a); err != nil || a.ID == "" {
		v.fail(step, "answered 202 without an approval: %s", raw)
		return 0, fmt.Errorf("no approval")
	}
	v.ok(step, "pending approval %s (%s, %d approvals needed)", a.ID, a.Action, a.Required)
	applied, err := approveAll(ctx, env, a.ID)
	call := fmt.Sprintf("POST /v1/approvals/%s/approve with %d approver keys", a.ID, len(env.approvers))
	if err != nil {
		v.fail(Step{Call: call}, "%v", err)
		return 0, err
	}
	v.ok(Step{Call: call, Index: applied.ModifyIndex}, "applied at index %d after %d approvals", applied.ModifyIndex, len(applied.Votes))
	return applied.ModifyIndex, nil
}

// regionList reads the seed path GET /region/list and returns the names.
func regionList(ctx context.Context, env *verifyEnv) ([]string, Step, error) {
	var raw bytes.Buffer
	step := Step{Call: "GET /region/list"}
	m, err := env.c.Do(ctx, http.MethodGet, "/region/list", nil, nil, &raw)
	step.Status = statusOf(m, err)
	if err != nil {
		return nil, step, err
	}
	step.Index = m.Index
	var list struct {
		Regions []struct {
			Name string `json:"name"`
		} `json:"regions"`
	}
	if err := json.Unmarshal(raw.Bytes(), &list); err != nil {
		return nil, step, fmt.Errorf("not JSON: %w", err)
	}
	step.Output = compact(raw.Bytes())
	var names []string
	for _, r := range list.Regions {
		names = append(names, r.Name)
	}
	return names, step, nil
}

// removeLeftover deletes a region an earlier, interrupted verification
// left behind (with approvals when it is a production region), and says
// whether there was one.
func removeLeftover(ctx context.Context, env *verifyEnv, name string) (bool, error) {
	if _, _, err := env.c.Region(ctx, name, nil); client.StatusOf(err) == http.StatusNotFound {
		return false, nil
	} else if err != nil {
		return false, err
	}
	a, err := env.c.DeleteRegionGated(ctx, name, nil)
	if err != nil {
		return true, err
	}
	if a != nil {
		if _, err := approveAll(ctx, env, a.ID); err != nil {
			return true, err
		}
	}
	return true, goneEverywhere(ctx, env, name)
}

// goneEverywhere waits until no server has region name.
func goneEverywhere(ctx context.Context, env *verifyEnv, name string) error {
	return onEveryServer(ctx, env, func(c *client.Client) error {
		_, _, err := c.Region(ctx, name, &client.QueryOptions{Consistency: "stale"})
		if client.StatusOf(err) == http.StatusNotFound {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}

// approveAll approves approval id with each approver key in turn until it
// is applied, and returns the approval as applied.
func approveAll(ctx context.Context, env *verifyEnv, id string) (*fsm.Approval, error) {
	if len(env.approvers) == 0 {
		return nil, fmt.Errorf("approval %s needs approvers, and no approver key was given (atomfed report --approver-key, or --dev-dir of a dev federation)", id)
	}
	var last *fsm.Approval
	for _, k := range env.approvers {
		ac, err := env.signedClient(k)
		if err != nil {
			return nil, err
		}
		a, err := ac.Approve(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("approve %s with key %s: %w", id, k.KeyID, err)
		}
		last = a
		if a.Status == fsm.ApprovalApplied {
			return a, nil
		}
	}
	return last, fmt.Errorf("approval %s is %s after %d approvals (every key given)", id, last.Status, len(env.approvers))
}

// verifyPolicy checks the Federation Policy Manager on the live federation:
//
//   - GET /v1/policy/status reports P1-P7, each with a known status and a
//     reason;
//   - a forged request is refused (P2): a registration of
//     VerifyForgedRegion whose body was changed after it was signed gets
//     403 and the region exists on no server;
//   - an approval applies (P3): registering the production region
//     VerifyProdRegion answers with a pending approval, which the approver
//     keys approve one by one until it applies, and the region is then on
//     every server; deregistering it takes an approval the same way.
func verifyPolicy(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	v := &Verification{OK: true}
	var refs []AuditRef
	var raw bytes.Buffer
	step := Step{Call: "GET /v1/policy/status"}
	m, err := env.c.Do(ctx, http.MethodGet, "/v1/policy/status", nil, nil, &raw)
	step.Status = statusOf(m, err)
	if err != nil {
		return v.fail(step, "%v", err), refs
	}
	step.Index = m.Index
	var st structs.PolicyStatus
	if err := json.Unmarshal(raw.Bytes(), &st); err != nil {
		return v.fail(step, "not JSON: %v", err), refs
	}
	env.policy = &st
	if err := checkPolicyMatrix(&st); err != nil {
		return v.fail(step, "%v", err), refs
	}
	step.Output = compact(raw.Bytes())
	v.ok(step, "P1-P7 reported by %s: %d pass, %d block, %d not evaluated", st.Node, st.Summary.Pass, st.Summary.Block, st.Summary.NotEvaluated)

	if step, err := forgedRegistration(ctx, env); err != nil {
		return v.fail(step, "%v", err), refs
	} else {
		v.Steps = append(v.Steps, step)
	}

	sc, _, err := newRegionClient(ctx, env, v, VerifyProdRegion)
	if err != nil {
		return v, refs
	}
	reg := &fsm.Region{Name: VerifyProdRegion, URL: "https://report-verify-prod.invalid:8401", Tier: fsm.TierProduction,
		Labels: map[string]string{"purpose": "phase-report-verification"}}
	step = Step{Call: "POST /region/register " + VerifyProdRegion + " (tier production, signed)"}
	got, pending, err := sc.RegisterRegionGated(ctx, reg, nil)
	switch {
	case err != nil:
		step.Status = client.StatusOf(err)
		return v.fail(step, "%v", err), refs
	case pending == nil:
		// Registered without approval: the policy does not gate
		// production regions. Remove it, and fail.
		_ = env.c.DeleteRegion(ctx, VerifyProdRegion, nil)
		return v.fail(step, "a production region was registered at index %d without any approval: P3 is not enforced", got.ModifyIndex), refs
	}
	step.Status = http.StatusAccepted
	v.ok(step, "pending approval %s (%d of %d approvals needed)", pending.ID, pending.Required, len(env.approvers))
	if _, _, err := env.c.Region(ctx, VerifyProdRegion, nil); client.StatusOf(err) != http.StatusNotFound {
		return v.fail(Step{Call: "GET /v1/regions/" + VerifyProdRegion}, "the region exists before its approval (%v)", err), refs
	}
	applied, err := approveAll(ctx, env, pending.ID)
	call := "POST /v1/approvals/" + pending.ID + "/approve x" + fmt.Sprint(len(env.approvers))
	if err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call, Index: applied.ModifyIndex}, "applied at index %d after %d approvals", applied.ModifyIndex, len(applied.Votes))
	refs = append(refs, AuditRef{Index: applied.ModifyIndex, What: "region " + VerifyProdRegion + " registered through approval " + pending.ID})
	call = "GET /v1/regions/" + VerifyProdRegion + "?consistency=stale on every server"
	if err := onEveryServer(ctx, env, func(c *client.Client) error {
		_, _, err := c.Region(ctx, VerifyProdRegion, &client.QueryOptions{Consistency: "stale"})
		return err
	}); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "present on all %d servers", len(env.fed.Servers))

	idx, err := deregister(ctx, env, v, VerifyProdRegion)
	if err != nil {
		return v, refs
	}
	if len(v.Steps) < 2 || !strings.HasPrefix(v.Steps[len(v.Steps)-1].Call, "POST /v1/approvals/") {
		return v.fail(Step{Call: "DELETE /v1/regions/" + VerifyProdRegion}, "a production region was deregistered without any approval: P3 is not enforced"), refs
	}
	refs = append(refs, AuditRef{Index: idx, What: "region " + VerifyProdRegion + " deregistered through an approval"})
	if err := goneEverywhere(ctx, env, VerifyProdRegion); err != nil {
		return v.fail(Step{Call: "GET /v1/regions/" + VerifyProdRegion + "?consistency=stale on every server"}, "%v", err), refs
	}
	v.ok(Step{Call: "GET /v1/regions/" + VerifyProdRegion + "?consistency=stale on every server"}, "gone from all %d servers", len(env.fed.Servers))
	return v, refs
}

// checkPolicyMatrix checks that st reports P1-P7 in order, each with a
// known status and a reason.
func checkPolicyMatrix(st *structs.PolicyStatus) error {
	want := []string{"P1", "P2", "P3", "P4", "P5", "P6", "P7"}
	if len(st.Policies) != len(want) {
		return fmt.Errorf("%d policies, want P1-P7", len(st.Policies))
	}
	for i, p := range st.Policies {
		switch {
		case p.ID != want[i]:
			return fmt.Errorf("policy %d is %q, want %s", i+1, p.ID, want[i])
		case p.Status != structs.PolicyPass && p.Status != structs.PolicyBlock && p.Status != structs.PolicyNotEvaluated:
			return fmt.Errorf("%s has status %q", p.ID, p.Status)
		case p.Reason == "":
			return fmt.Errorf("%s gives no reason", p.ID)
		}
	}
	return nil
}

// forgedRegistration sends a registration of VerifyForgedRegion whose body
// was changed after it was signed (its URL), and checks it is refused with
// 403 and that no server has the region.
func forgedRegistration(ctx context.Context, env *verifyEnv) (Step, error) {
	step := Step{Call: "POST /region/register " + VerifyForgedRegion + " (body changed after signing)"}
	key, err := signing.NewSigner()
	if err != nil {
		return step, err
	}
	reg := &fsm.Region{Name: VerifyForgedRegion, URL: "https://signed.invalid:8401", Tier: fsm.TierStaging}
	body, sig, err := client.SignBody(key, reg, map[string]any{"public_key": string(key.PublicPEM)})
	if err != nil {
		return step, err
	}
	forged := bytes.Replace(body, []byte("https://signed.invalid:8401"), []byte("https://forged.invalid:8401"), 1)
	if bytes.Equal(forged, body) {
		return step, fmt.Errorf("could not change the signed body")
	}
	var raw bytes.Buffer
	m, err := env.c.DoWithHeader(ctx, http.MethodPost, "/region/register", nil, forged, &raw, http.Header{"X-Atomfed-Signature": {sig}})
	step.Status = statusOf(m, err)
	var ce *client.Error
	switch {
	case err == nil:
		step.Output = compact(raw.Bytes())
		return step, fmt.Errorf("answered %d: a body that does not match its signature was accepted", step.Status)
	case !errors.As(err, &ce) || ce.Status != http.StatusForbidden:
		return step, fmt.Errorf("want 403 for a body that does not match its signature, got: %w", err)
	}
	code := ce.Code
	if err := goneEverywhere(ctx, env, VerifyForgedRegion); err != nil {
		return step, fmt.Errorf("refused with 403, but: %w", err)
	}
	step.Result = fmt.Sprintf("refused with 403 (%s); the region exists on none of the %d servers", code, len(env.fed.Servers))
	return step, nil
}

// onEveryServer polls check against every server until it holds on all of
// them, for at most the verification timeout.
func onEveryServer(ctx context.Context, env *verifyEnv, check func(*client.Client) error) error {
	wait := env.timeout
	deadline := time.Now().Add(wait)
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
			return fmt.Errorf("not on every server within %s: %s", wait, strings.Join(errs, "; "))
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
