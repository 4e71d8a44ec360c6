package policy

import (
	"fmt"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// FailoverDrillWindow is how recent a finished failover must be for P7's
// failover part: one that ran (a drill with --force, or a real one)
// within 30 days.
const FailoverDrillWindow = 30 * 24 * time.Hour

// failoverCapabilities are P7's failover parts: the failover tests pass
// only from a failover that actually ran within FailoverDrillWindow (the
// FSM keeps the last fsm.MaxFailoverHistory finished ones: time, tenant,
// regions, RPO and RTO), and region failover is what the federation can
// do. missing names what is missing.
func failoverCapabilities(in *Input) (tests, region Capability, last *fsm.FailoverRecord, missing []string) {
	in.Source.FSM().Read(func(s *fsm.State) {
		for i := len(s.FailoverHistory) - 1; i >= 0; i-- {
			r := s.FailoverHistory[i]
			if in.Now.Sub(time.Unix(0, r.EndedAt)) <= FailoverDrillWindow {
				last = r
				break
			}
		}
	})
	where := []string{"GET /v1/failovers", "atomfed tenant failover ID --force (a drill)", "internal/e2e: TestUnplannedFailover (internal/e2e/unplanned_failover_test.go)"}
	if last != nil {
		tests = Capability{InPlace: true, Where: where, What: fmt.Sprintf(
			"a failover ran within %s: tenant %s %s -> %s (%s) at %s, RTO %d ms, RPO %d ms of lag (applied up to %s)",
			FailoverDrillWindow, last.Tenant, last.From, last.To, last.Mode, time.Unix(0, last.EndedAt).UTC().Format(time.RFC3339),
			last.RTOMS, last.RPOLagMS, orNone(last.AppliedLSN))}
	} else {
		tests = Capability{Where: where, What: fmt.Sprintf("no failover ran within %s: run a failover drill (`atomfed tenant failover ID --to MIRROR --force` on a test tenant)", FailoverDrillWindow)}
		missing = append(missing, tests.What)
	}
	region = Capability{InPlace: true,
		What:  "unplanned failover of a tenant or of every tenant of a lost region, m-of-n approved (the failover rule) or automatic (a tenant's failover policy, decided by the leader's quorum with an RPO budget and the target's drill precondition)",
		Where: []string{"POST /v1/tenants/{id}/failover", "POST /v1/regions/{name}/failover", "atomfed tenant failover", "atomfed region failover"}}
	return tests, region, last, missing
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
