package httpapi

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Cluster is what the API needs from a server. cluster.Server implements it.
type Cluster interface {
	NodeID() string
	Region() string
	FSM() *fsm.FSM
	// Apply commits a command on the leader (see cluster.Server.Apply).
	Apply(ctx context.Context, t fsm.MessageType, body any) (*fsm.ApplyResult, error)
	// ConsistentRead confirms leadership with a quorum (shared by
	// concurrent callers).
	ConsistentRead(ctx context.Context) error
	IsLeader() bool
	State() string
	Leader() (id, addr string)
	LeaderHTTP() (string, error)
	LeaderChangeCh() <-chan struct{}
	Configuration() ([]structs.Peer, uint64, error)
	RemovePeer(ctx context.Context, id string) error
	Members() []structs.Member
	SaveSnapshot(w io.Writer) (*structs.ArchiveMeta, error)
	RestoreSnapshot(r io.Reader) (*structs.ArchiveMeta, error)
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
}

// API is the HTTP API of one server.
type API struct {
	cfg     Config
	c       Cluster
	log     hclog.Logger
	router  *mux.Router
	fwd     *http.Client
	metrics *metrics
	now     func() time.Time
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
		cfg:     cfg,
		c:       cfg.Cluster,
		log:     cfg.Logger.Named("http"),
		fwd:     &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		metrics: newMetrics(cfg.Registerer),
		now:     cfg.Now,
	}
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

	// Seed paths, kept exactly.
	r.HandleFunc("/health", a.health).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/region/register", a.registerRegion).Methods(http.MethodPost, http.MethodPut)
	r.HandleFunc("/region/list", a.listRegions).Methods(http.MethodGet)
	r.HandleFunc("/global-status", a.globalStatus).Methods(http.MethodGet)
	r.Handle("/metrics", a.metricsHandler()).Methods(http.MethodGet)

	// Not a mux subrouter: a subrouter's routes repeat its prefix matcher,
	// which clears the method mismatch of earlier routes, so a wrong method
	// under /v1 would answer 404 instead of 405.
	v1 := prefixed{r: r, prefix: "/v1"}
	v1.HandleFunc("/regions", a.listRegions).Methods(http.MethodGet)
	v1.HandleFunc("/regions/nearest", a.nearestRegions).Methods(http.MethodGet)
	v1.HandleFunc("/regions/{name}", a.getRegion).Methods(http.MethodGet)
	v1.HandleFunc("/regions/{name}", a.putRegion).Methods(http.MethodPut)
	v1.HandleFunc("/regions/{name}", a.deleteRegion).Methods(http.MethodDelete)
	v1.HandleFunc("/regions/{name}/database", a.getRegionDatabase).Methods(http.MethodGet)
	v1.HandleFunc("/regions/{name}/database", a.putRegionDatabase).Methods(http.MethodPut)
	v1.HandleFunc("/tenants", a.listTenants).Methods(http.MethodGet)
	v1.HandleFunc("/tenants/{id}", a.getTenant).Methods(http.MethodGet)
	v1.HandleFunc("/tenants/{id}", a.putTenant).Methods(http.MethodPut)
	v1.HandleFunc("/tenants/{id}", a.deleteTenant).Methods(http.MethodDelete)
	v1.HandleFunc("/tenants/{id}/replication", a.tenantReplication).Methods(http.MethodGet)
	v1.HandleFunc("/global-tables", a.listGlobalTables).Methods(http.MethodGet)
	v1.HandleFunc("/global-tables/{name}", a.getGlobalTable).Methods(http.MethodGet)
	v1.HandleFunc("/global-tables/{name}", a.putGlobalTable).Methods(http.MethodPut)
	v1.HandleFunc("/global-tables/{name}", a.deleteGlobalTable).Methods(http.MethodDelete)
	v1.HandleFunc("/replication", a.replicationSummary).Methods(http.MethodGet)

	v1.HandleFunc("/agents", a.listAgents).Methods(http.MethodGet)
	v1.HandleFunc("/agents/{node}", a.getAgent).Methods(http.MethodGet)
	v1.HandleFunc("/agents/{node}/tasks", a.agentTasks).Methods(http.MethodGet)
	v1.HandleFunc("/agents/{node}/report", a.agentReport).Methods(http.MethodPost)
	v1.HandleFunc("/agents/{node}/leave", a.agentLeave).Methods(http.MethodPost)
	v1.HandleFunc("/tasks", a.listTasks).Methods(http.MethodGet)
	v1.HandleFunc("/coordinates", a.coordinates).Methods(http.MethodGet)

	v1.HandleFunc("/status/leader", a.statusLeader).Methods(http.MethodGet)
	v1.HandleFunc("/status/peers", a.statusPeers).Methods(http.MethodGet)
	v1.HandleFunc("/status/audit", a.statusAudit).Methods(http.MethodGet)
	v1.HandleFunc("/members", a.members).Methods(http.MethodGet)
	v1.HandleFunc("/operator/raft/configuration", a.raftConfiguration).Methods(http.MethodGet)
	v1.HandleFunc("/operator/raft/peer", a.removePeer).Methods(http.MethodDelete)
	v1.HandleFunc("/snapshot", a.snapshotSave).Methods(http.MethodGet)
	v1.HandleFunc("/snapshot", a.snapshotRestore).Methods(http.MethodPut)
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

func (a *API) metricsHandler() http.Handler {
	g := a.cfg.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: a.log.StandardLogger(nil)})
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
					log.Error("handler panic", "path", r.URL.Path, "panic", v)
					writeJSON(w, http.StatusInternalServerError, structs.ErrorBody{Error: structs.ErrorDetail{Code: "internal", Message: "internal error"}})
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}
