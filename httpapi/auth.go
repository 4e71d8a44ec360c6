package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Role sets routes accept.
var (
	anyRole   = []string{fsm.RoleOperator, fsm.RoleApprover, fsm.RoleAgent, fsm.RoleReader}
	operators = []string{fsm.RoleOperator}
	agents    = []string{fsm.RoleOperator, fsm.RoleAgent}
	approvers = []string{fsm.RoleOperator, fsm.RoleApprover}
	signers   = []string{fsm.RoleOperator, fsm.RoleAgent, fsm.RoleApprover}
)

// BootstrapAccessor names the bootstrap management token in logs and in
// approvals' requested_by.
const BootstrapAccessor = "bootstrap"

// identity is who a request's token says the caller is; Node and Region
// are an agent token's binding.
type identity struct {
	Accessor string
	Role     string
	Node     string
	Region   string
}

type identityKey struct{}

func identityOf(r *http.Request) identity {
	id, _ := r.Context().Value(identityKey{}).(identity)
	return id
}

// HashToken returns the hex SHA-256 of a token secret, the form the FSM
// stores.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// authn resolves the bearer token: the servers' bootstrap token
// (FEDERATION_TOKEN) is an operator; other tokens are looked up by hash in
// this server's state. A token created a moment ago is valid here once the
// entry has been replicated (usually milliseconds).
func (a *API) authn(r *http.Request) (identity, error) {
	h := r.Header.Get("Authorization")
	secret, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || secret == "" {
		return identity{}, unauthenticated("unauthenticated",
			"this endpoint needs a token: send Authorization: Bearer <token> (the servers' FEDERATION_TOKEN, or one made with atomfed token create)")
	}
	if b := a.cfg.BootstrapToken; b != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(b)) == 1 {
		if a.c.FSM().BootstrapRetired() {
			return identity{}, unauthenticated("bootstrap_retired",
				"the bootstrap token (FEDERATION_TOKEN) was retired on every server: use an operator token made with atomfed token create")
		}
		return identity{Accessor: BootstrapAccessor, Role: fsm.RoleOperator}, nil
	}
	hash := HashToken(secret)
	lookup := func() (t *fsm.Token) {
		a.c.FSM().Read(func(s *fsm.State) { t = s.TokenByHash(hash) })
		return t
	}
	t := lookup()
	if t == nil {
		// The token may be younger than this server's state: its creator
		// was answered once the leader applied it, and a follower learns
		// the commit a moment later. Catch up with the leader's commit
		// index before refusing, so that a token works on the next request
		// to any server (read-your-writes).
		if err := a.catchUp(r.Context()); err != nil {
			return identity{}, err
		}
		t = lookup()
	}
	if t == nil {
		return identity{}, unauthenticated("invalid_token", "the token is unknown or was revoked")
	}
	return identity{Accessor: t.Accessor, Role: t.Role, Node: t.Node, Region: t.Region}, nil
}

// tokenCatchUpWait bounds how long an unknown token waits for this server
// to apply the leader's commit index.
const tokenCatchUpWait = 2 * time.Second

// catchUp waits until this server has applied everything the leader had
// committed when it was asked (a linearizable read barrier), for a request
// that found nothing where its client may just have been told something
// exists (a token, a tenant to patch). A follower still behind after a
// read index round tries again until tokenCatchUpWait; no leader to ask
// is 503, since the object may exist.
func (a *API) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, tokenCatchUpWait)
	defer cancel()
	for {
		err := a.c.ConsistentRead(ctx)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, structs.ErrFollowerBehind) && ctx.Err() == nil:
			continue
		case ctx.Err() != nil:
			return unavailable("token_check_timeout", "this server could not catch up with the leader in time; retry")
		default:
			return unavailable("no_leader", "this server cannot reach a leader to catch up with; retry shortly")
		}
	}
}

// auth wraps a handler with token authentication and a role check: no or
// an unknown token is 401, a token whose role may not do this is 403.
func (a *API) auth(roles []string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := a.authn(r)
		if err != nil {
			a.metrics.authFailures.WithLabelValues("unauthenticated").Inc()
			writeError(w, err)
			return
		}
		if !slices.Contains(roles, id.Role) {
			a.metrics.authFailures.WithLabelValues("role").Inc()
			writeError(w, forbidden("forbidden_role",
				fmt.Sprintf("a %s token may not do this; it needs one of: %s", id.Role, strings.Join(roles, ", "))))
			return
		}
		ctx := context.WithValue(r.Context(), identityKey{}, id)
		// A write this server forwards names its caller: the leader checks
		// the caller's authority itself (AuthorizeForwarded).
		secret, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		h(w, r.WithContext(structs.WithCaller(ctx, secret)))
	}
}

// actsAs refuses an agent token acting for another agent node than the
// one it is bound to, and an agent token bound to none (made before
// protocol 4). Other roles are not bound; node "" skips the node check.
func actsAs(id identity, node string) error {
	if id.Role != fsm.RoleAgent {
		return nil
	}
	if id.Node == "" {
		return errUnboundAgentToken
	}
	if node != id.Node {
		return forbidden("token_binding", "this agent token is bound to agent "+quote(id.Node)+"; it may not act as "+quote(node))
	}
	return nil
}

// actsFor refuses an agent token acting for another region than its own.
func actsFor(id identity, region string) error {
	if id.Role != fsm.RoleAgent {
		return nil
	}
	if id.Node == "" {
		return errUnboundAgentToken
	}
	if region != id.Region {
		return forbidden("token_binding", "this agent token is bound to region "+quote(id.Region)+"; it may not act for region "+quote(region))
	}
	return nil
}

// errUnboundAgentToken answers an agent token made before protocol 4.
var errUnboundAgentToken = forbidden("agent_token_unbound",
	"this agent token is bound to no agent node and region: make one per agent with `atomfed token create --role agent --node <node> --region <region>`, restart the agent with it, then revoke this one")
