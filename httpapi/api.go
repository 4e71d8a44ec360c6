package httpapi

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/policy"
	"github.com/atomcloud/atomfed/httpapi/ui"
	aggr "github.com/atomcloud/atomfed/internal/metrics"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Cluster is what the API needs from a server. cluster.Server implements it.
type Cluster interface {
	NodeID() string
	Region() string
	FSM() *fsm.FSM
	// Apply commits a command on the leader (see cluster.Server.Apply).
	Apply(ctx context.Context, t fsm.MessageType, body any) (*fsm.ApplyResult, error)
	// ConsistentRead makes a following read linearizable: on the leader a
	// quorum confirms its leadership, on a follower a read index from the
	// leader is applied locally (shared by concurrent callers).
	ConsistentRead(ctx context.Context) error
	// ForwardApply commits a command through the leader from a follower
	// (see cluster.Server.ForwardApply).
	ForwardApply(ctx context.Context, t fsm.MessageType, body any, stamp int64) (*structs.ForwardResult, error)
	// Protocols is the protocol version the cluster speaks (the lowest of
	// the servers in the configuration) and the leader's: the rules a
	// command is logged under (fsm/rules.go).
	Protocols() (cluster, leader int)
	IsLeader() bool
	State() string
	Leader() (id, addr string)
	LeaderHTTP() (string, error)
	LeaderChangeCh() <-chan struct{}
	Configuration() ([]structs.Peer, uint64, error)
	RemovePeer(ctx context.Context, id string) error
	Members() []structs.Member
	SaveSnapshot(w io.Writer) (*structs.ArchiveMeta, error)
	RestoreSnapshot(r io.Reader, by string) (*structs.ArchiveMeta, error)
	Stats() map[string]string
	Coordinates() []structs.Coordinate
	NearestRegions(from string) ([]structs.RegionRTT, error)
}

// Config configures the API.
type Config struct {
	Cluster Cluster
	Logger  hclog.Logger
	// Registerer receives the HTTP metrics; Gatherer is served on /metrics.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Version is reported in /health.
	Version string
	// LeaderWait bounds how long a request waits for a leader to appear
	// before answering 503.
	LeaderWait time.Duration
	// ForwardTransport carries forwarded requests; nil uses a pooled
	// keep-alive transport.
	ForwardTransport http.RoundTripper
	// Now is the clock used to stamp commands; nil uses time.Now.
	Now func() time.Time
	// BootstrapToken is the servers' FEDERATION_TOKEN: an operator token
	// that exists without being stored, to bootstrap the others.
	BootstrapToken string
	// Signer is this server's key; it signs the trust bundle.
	Signer *signing.Signer
	// EnableDebug serves Go's pprof profiles under /debug/pprof/ (operator
	// token required).
	EnableDebug bool
	// Simulation is the node's SIMULATION_MODE evaluation, shown in
	// /health, /global-status and /v1/policy/status (nil: not evaluated).
	Simulation *structs.Simulation
	// ProbeTLS is the TLS client config of this server's calls to other
	// nodes' endpoints (policy evaluation): it trusts the federation CA,
	// and each call requires a certificate naming the node called. nil in
	// plaintext mode. Those calls carry no token.
	ProbeTLS *tls.Config
	// Policies replaces the policy evaluators of /v1/policy/status
	// (nil: policy.Policies()).
	Policies []policy.Policy
	// AnonymousRegionList serves GET /region/list without a token (and,
	// behind PlaintextGuard with AnonymousPaths, over plain HTTP), the way
	// Consul's anonymous token may read the catalog: region names, URLs,
	// tiers, statuses and health status, nothing else (no database
	// endpoint, labels, agents or probe detail; a request with a token gets
	// the whole view). Off by default; `atomfed dev` turns it on for its
	// loopback federation.
	AnonymousRegionList bool
	// MaxBlockingQueries caps the blocking queries (?index=) this server
	// holds open in total, MaxBlockingPerToken those of one token
	// (accessor); over a cap a query is answered 429 with Retry-After.
	// 0: DefaultMaxBlockingQueries, DefaultMaxBlockingPerToken.
	MaxBlockingQueries  int
	MaxBlockingPerToken int
}

// AnonymousPaths are the paths AnonymousRegionList opens to requests
// without a token.
var AnonymousPaths = []string{"/region/list"}

// API is the HTTP API of one server.
type API struct {
	cfg      Config
	c        Cluster
	log      hclog.Logger
	router   *mux.Router
	fwd      *http.Client
	metrics  *metrics
	blocking *blockingLimiter
	now      func() time.Time
	policy   *policy.Engine
	// metricsStore holds each region's newest metrics snapshot, in memory
	// only (metrics_federate.go).
	metricsStore *aggr.Store
}

// New builds the API and its router.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.LeaderWait <= 0 {
		cfg.LeaderWait = 3 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tr := cfg.ForwardTransport
	if tr == nil {
		tr = &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	a := &API{
		cfg:      cfg,
		c:        cfg.Cluster,
		log:      cfg.Logger.Named("http"),
		fwd:      &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		metrics:  newMetrics(cfg.Registerer),
		blocking: newBlockingLimiter(cfg.MaxBlockingQueries, cfg.MaxBlockingPerToken, cfg.Registerer),
		now:      cfg.Now,

		metricsStore: aggr.NewStore(),
	}
	a.policy = policy.New(policy.Config{Source: cfg.Cluster, Simulation: cfg.Simulation, Policies: cfg.Policies, TLS: cfg.ProbeTLS})
	a.router = a.routes()
	return a
}

// Handler returns the API's root handler.
func (a *API) Handler() http.Handler { return a.router }

func (a *API) routes() *mux.Router {
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeError(w, errRoute) })
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeError(w, errMethod) })
	r.Use(a.instrument, recoverer(a.log))

	// Seed paths, kept exactly. Everything but /health and /metrics needs
	// a token with a fitting role; /metrics shows more with one.
	r.HandleFunc("/health", a.health).Methods(http.MethodGet, http.MethodHead)
	// Region writes are the operator's (signed by the region's key when it
	// registers): an agent's token acts only as its own node.
	r.HandleFunc("/region/register", a.auth(operators, a.registerRegion)).Methods(http.MethodPost, http.MethodPut)
	if a.cfg.AnonymousRegionList {
		r.HandleFunc("/region/list", a.anonymousRegionList).Methods(http.MethodGet)
	} else {
		r.HandleFunc("/region/list", a.auth(anyRole, a.listRegions)).Methods(http.MethodGet)
	}
	r.HandleFunc("/global-status", a.auth(anyRole, a.globalStatus)).Methods(http.MethodGet)
	r.Handle("/metrics", a.metricsHandler()).Methods(http.MethodGet)

	// Not a mux subrouter: a subrouter's routes repeat its prefix matcher,
	// which clears the method mismatch of earlier routes, so a wrong method
	// under /v1 would answer 404 instead of 405.
	v1 := prefixed{r: r, prefix: "/v1"}
	v1.HandleFunc("/regions", a.auth(anyRole, a.listRegions)).Methods(http.MethodGet)
	v1.HandleFunc("/regions/nearest", a.auth(anyRole, a.nearestRegions)).Methods(http.MethodGet)
	v1.HandleFunc("/regions/{name}", a.auth(anyRole, a.getRegion)).Methods(http.MethodGet)
	v1.HandleFunc("/regions/{name}", a.auth(operators, a.putRegion)).Methods(http.MethodPut)
	v1.HandleFunc("/regions/{name}", a.auth(operators, a.deleteRegion)).Methods(http.MethodDelete)
	v1.HandleFunc("/regions/{name}/database", a.auth(anyRole, a.getRegionDatabase)).Methods(http.MethodGet)
	v1.HandleFunc("/regions/{name}/database", a.auth(agents, a.putRegionDatabase)).Methods(http.MethodPut)
	v1.HandleFunc("/regions/{name}/backup-policy", a.auth(anyRole, a.getBackupPolicy)).Methods(http.MethodGet)
	v1.HandleFunc("/regions/{name}/backup-policy", a.auth(operators, a.putBackupPolicy)).Methods(http.MethodPut)
	v1.HandleFunc("/regions/{name}/backups", a.auth(operators, a.runBackup)).Methods(http.MethodPost)
	v1.HandleFunc("/regions/{name}/drills", a.auth(anyRole, a.listDrills)).Methods(http.MethodGet)
	v1.HandleFunc("/regions/{name}/drills", a.auth(operators, a.runDrill)).Methods(http.MethodPost)
	v1.HandleFunc("/regions/{name}/rebuild", a.auth(anyRole, a.getRebuild)).Methods(http.MethodGet)
	v1.HandleFunc("/regions/{name}/rebuild", a.auth(operators, a.runRebuild)).Methods(http.MethodPost)
	v1.HandleFunc("/backups", a.auth(anyRole, a.listBackups)).Methods(http.MethodGet)
	v1.HandleFunc("/backups/{id}", a.auth(anyRole, a.getBackup)).Methods(http.MethodGet)
	v1.HandleFunc("/tenants", a.auth(anyRole, a.listTenants)).Methods(http.MethodGet)
	v1.HandleFunc("/tenants/{id}", a.auth(anyRole, a.getTenant)).Methods(http.MethodGet)
	v1.HandleFunc("/tenants/{id}", a.auth(operators, a.putTenant)).Methods(http.MethodPut)
	v1.HandleFunc("/tenants/{id}", a.auth(operators, a.patchTenant)).Methods(http.MethodPatch)
	v1.HandleFunc("/tenants/{id}", a.auth(operators, a.deleteTenant)).Methods(http.MethodDelete)
	v1.HandleFunc("/tenants/{id}/replication", a.auth(anyRole, a.tenantReplication)).Methods(http.MethodGet)
	v1.HandleFunc("/tenants/{id}/switchover", a.auth(anyRole, a.getSwitchover)).Methods(http.MethodGet)
	v1.HandleFunc("/tenants/{id}/switchover", a.auth(operators, a.startSwitchover)).Methods(http.MethodPost)
	v1.HandleFunc("/tenants/{id}/switchover", a.auth(operators, a.abortSwitchover)).Methods(http.MethodDelete)
	v1.HandleFunc("/tenants/{id}/divergence", a.auth(anyRole, a.getDivergence)).Methods(http.MethodGet)
	v1.HandleFunc("/tenants/{id}/divergence/{region}", a.auth(operators, a.resolveDivergence)).Methods(http.MethodDelete)
	v1.HandleFunc("/tenants/{id}/failover", a.auth(anyRole, a.getFailover)).Methods(http.MethodGet)
	v1.HandleFunc("/tenants/{id}/failover", a.auth(operators, a.startFailover)).Methods(http.MethodPost)
	v1.HandleFunc("/regions/{name}/failover", a.auth(operators, a.startRegionFailover)).Methods(http.MethodPost)
	v1.HandleFunc("/failovers", a.auth(anyRole, a.listFailovers)).Methods(http.MethodGet)
	v1.HandleFunc("/global-tables", a.auth(anyRole, a.listGlobalTables)).Methods(http.MethodGet)
	v1.HandleFunc("/global-tables/{name}", a.auth(anyRole, a.getGlobalTable)).Methods(http.MethodGet)
	v1.HandleFunc("/global-tables/{name}", a.auth(operators, a.putGlobalTable)).Methods(http.MethodPut)
	v1.HandleFunc("/global-tables/{name}", a.auth(operators, a.deleteGlobalTable)).Methods(http.MethodDelete)
	v1.HandleFunc("/replication", a.auth(anyRole, a.replicationSummary)).Methods(http.MethodGet)
	v1.HandleFunc("/route", a.auth(anyRole, a.route)).Methods(http.MethodGet)

	v1.HandleFunc("/agents", a.auth(anyRole, a.listAgents)).Methods(http.MethodGet)
	v1.HandleFunc("/agents/{node}", a.auth(anyRole, a.getAgent)).Methods(http.MethodGet)
	v1.HandleFunc("/agents/{node}/tasks", a.auth(anyRole, a.agentTasks)).Methods(http.MethodGet)
	v1.HandleFunc("/agents/{node}/report", a.auth(agents, a.agentReport)).Methods(http.MethodPost)
	v1.HandleFunc("/agents/{node}/leave", a.auth(agents, a.agentLeave)).Methods(http.MethodPost)
	v1.HandleFunc("/tasks", a.auth(anyRole, a.listTasks)).Methods(http.MethodGet)
	v1.HandleFunc("/coordinates", a.auth(anyRole, a.coordinates)).Methods(http.MethodGet)
	v1.HandleFunc("/metrics/federate", a.auth(anyRole, a.metricsFederate)).Methods(http.MethodGet)
	v1.HandleFunc("/metrics/regions", a.auth(anyRole, a.metricsRegions)).Methods(http.MethodGet)
	v1.HandleFunc("/metrics/regions/{region}/snapshot", a.auth(metricsPushers, a.putMetricsSnapshot)).Methods(http.MethodPut)

	v1.HandleFunc("/trust/members", a.auth(anyRole, a.listMembers)).Methods(http.MethodGet)
	v1.HandleFunc("/trust/members", a.auth(agents, a.registerMember)).Methods(http.MethodPost)
	v1.HandleFunc("/trust/members/{id}", a.auth(anyRole, a.getMember)).Methods(http.MethodGet)
	v1.HandleFunc("/trust/members/{id}", a.auth(operators, a.deleteMember)).Methods(http.MethodDelete)
	v1.HandleFunc("/trust/members/{id}/keys", a.auth(signers, a.rotateKey)).Methods(http.MethodPost)
	v1.HandleFunc("/trust/members/{id}/keys/{key}/revoke", a.auth(operators, a.revokeKey)).Methods(http.MethodPost)
	v1.HandleFunc("/trust/bundle", a.auth(anyRole, a.trustBundle)).Methods(http.MethodGet)
	v1.HandleFunc("/trust/status", a.auth(anyRole, a.trustStatus)).Methods(http.MethodGet)
	v1.HandleFunc("/tokens", a.auth(operators, a.listTokens)).Methods(http.MethodGet)
	v1.HandleFunc("/tokens", a.auth(operators, a.createToken)).Methods(http.MethodPost)
	v1.HandleFunc("/tokens/{accessor}", a.auth(operators, a.deleteToken)).Methods(http.MethodDelete)
	v1.HandleFunc("/token/self", a.auth(anyRole, a.tokenSelf)).Methods(http.MethodGet)
	v1.HandleFunc("/policy/approvals", a.auth(anyRole, a.getPolicy)).Methods(http.MethodGet)
	v1.HandleFunc("/policy/approvals", a.auth(operators, a.putPolicy)).Methods(http.MethodPut)
	v1.HandleFunc("/approvals", a.auth(anyRole, a.listApprovals)).Methods(http.MethodGet)
	v1.HandleFunc("/approvals/{id}", a.auth(anyRole, a.getApproval)).Methods(http.MethodGet)
	v1.HandleFunc("/approvals/{id}/approve", a.auth(approvers, a.approve)).Methods(http.MethodPost)

	v1.HandleFunc("/status/leader", a.auth(anyRole, a.statusLeader)).Methods(http.MethodGet)
	v1.HandleFunc("/status/peers", a.auth(anyRole, a.statusPeers)).Methods(http.MethodGet)
	v1.HandleFunc("/status/audit", a.auth(anyRole, a.statusAudit)).Methods(http.MethodGet)
	v1.HandleFunc("/members", a.auth(anyRole, a.members)).Methods(http.MethodGet)
	v1.HandleFunc("/operator/raft/configuration", a.auth(operators, a.raftConfiguration)).Methods(http.MethodGet)
	v1.HandleFunc("/operator/raft/peer", a.auth(operators, a.removePeer)).Methods(http.MethodDelete)
	v1.HandleFunc("/snapshot", a.auth(operators, a.snapshotSave)).Methods(http.MethodGet)
	v1.HandleFunc("/snapshot", a.auth(operators, a.snapshotRestore)).Methods(http.MethodPut)
	v1.HandleFunc("/policy/status", a.auth(anyRole, a.policyStatus)).Methods(http.MethodGet)
	// The operator console: static files without a token (they hold no
	// data); every datum it shows comes from the API above with the
	// caller's token.
	r.Handle("/ui", http.RedirectHandler(ui.Prefix, http.StatusMovedPermanently)).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix(ui.Prefix).Handler(ui.Handler()).Methods(http.MethodGet, http.MethodHead)
	if a.cfg.EnableDebug {
		r.PathPrefix("/debug/pprof/").Handler(a.auth(operators, pprofIndex))
	}
	return r
}

// prefixed registers routes on r under a path prefix.
type prefixed struct {
	r      *mux.Router
	prefix string
}

func (p prefixed) HandleFunc(path string, f func(http.ResponseWriter, *http.Request)) *mux.Route {
	return p.r.HandleFunc(p.prefix+path, f)
}

// metricsHandler serves /metrics: without a token the series that name
// tenants, tables or tasks are left out (RedactedGatherer); a valid token
// of any role sees them all; an unknown token is 401.
func (a *API) metricsHandler() http.Handler {
	g := a.cfg.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	opts := promhttp.HandlerOpts{ErrorLog: a.log.StandardLogger(nil)}
	full := promhttp.HandlerFor(g, opts)
	anonymous := promhttp.HandlerFor(RedactedGatherer(g), opts)
	authed := a.auth(anyRole, full.ServeHTTP)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			anonymous.ServeHTTP(w, r)
			return
		}
		authed(w, r)
	})
}

// recoverer turns a handler panic into a 500 with the error envelope.
func recoverer(log hclog.Logger) mux.MiddlewareFunc {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					log.Error("handler panic", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
					writeError(w, errInternal)
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}
