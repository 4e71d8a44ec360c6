package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// Defaults.
const (
	DefaultReplicationUser = "atomfed_replicator"
	DefaultInterval        = 5 * time.Second
	// syncInterval is how often the sync-standby controller looks at its
	// mirrors: a degrade happens within the tenant's bound plus this plus
	// a config reload.
	syncInterval = 250 * time.Millisecond
)

var identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Config configures the replication executors of one agent. cmd builds it
// from flags and the environment.
type Config struct {
	// DSN is the agent's connection to its region's PostgreSQL. It may hold
	// a password; it is never logged or reported.
	DSN string
	// Advertise, when set, replaces the host and port parsed from DSN in
	// the endpoint reported to the federation (the address other regions'
	// PostgreSQL servers dial).
	Advertise string
	// ReplicationUser is the role subscriptions log in as on publishers.
	ReplicationUser string
	// ReplicationPassfile is a pgpass file holding that role's password
	// for the other regions; it must be readable by this region's
	// PostgreSQL server (it is named in subscription connection strings)
	// and by the agent. Without one, the role logs in without a password,
	// which works only where the publishers trust it (pg_hba.conf).
	ReplicationPassfile string
	// ReplicationCA is the CA certificate file (PEM) that signs the other
	// regions' PostgreSQL server certificates. Every connection to
	// another region's database (a subscription's, and the agent's own)
	// uses TLS with sslmode=verify-full against it, so that only the
	// source region's server, under the name the federation records for
	// it, gets the replication role's login. Like the passfile, it must be
	// readable by this region's PostgreSQL server and by the agent.
	// Without one, libpq and the agent verify against their default roots
	// (for libpq, ~/.postgresql/root.crt of the server's OS user).
	ReplicationCA string
	// Interval is how often executors converge and probe (lag, drift).
	Interval   time.Duration
	Logger     hclog.Logger
	Registerer prometheus.Registerer
}

// Validate checks the config and parses the DSN.
func (c *Config) Validate() error {
	if c.DSN == "" {
		return errors.New("replication needs the region's PostgreSQL: set POSTGRES_DSN or --postgres-dsn")
	}
	if _, err := pgx.ParseConfig(c.DSN); err != nil {
		return fmt.Errorf("POSTGRES_DSN does not parse (%s)", redact(err))
	}
	if c.ReplicationUser != "" && !identRe.MatchString(c.ReplicationUser) {
		return fmt.Errorf("--replication-user %q must be a plain role name (lower-case letters, digits, '_')", c.ReplicationUser)
	}
	if strings.ContainsAny(c.ReplicationPassfile, "'\\") {
		return fmt.Errorf("--replication-passfile must not contain quotes or backslashes")
	}
	if strings.ContainsAny(c.ReplicationCA, "'\\") {
		return fmt.Errorf("--replication-ca must not contain quotes or backslashes")
	}
	if c.ReplicationCA != "" {
		if _, err := tlsutil.Pool(c.ReplicationCA); err != nil {
			return fmt.Errorf("--replication-ca: %w", err)
		}
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("--postgres-advertise %q must be host:port", c.Advertise)
		}
	}
	return nil
}

// Endpoint returns the secret-free endpoint of the region's database, as
// reported to the federation.
func (c *Config) Endpoint() (*fsm.DatabaseEndpoint, error) {
	pc, err := pgx.ParseConfig(c.DSN)
	if err != nil {
		return nil, fmt.Errorf("POSTGRES_DSN does not parse (%s)", redact(err))
	}
	ep := &fsm.DatabaseEndpoint{Host: pc.Host, Port: int(pc.Port), Database: pc.Database}
	if c.Advertise != "" {
		h, p, _ := net.SplitHostPort(c.Advertise)
		ep.Host = h
		ep.Port, _ = strconv.Atoi(p)
	}
	if err := fsm.ValidateEndpoint(ep); err != nil {
		return nil, fmt.Errorf("the region's database endpoint %s:%d/%s cannot be shared (a unix socket or an unusual name? set --postgres-advertise): %w",
			ep.Host, ep.Port, ep.Database, err)
	}
	return ep, nil
}

func (c *Config) defaults() {
	if c.ReplicationUser == "" {
		c.ReplicationUser = DefaultReplicationUser
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
}

// Executor is a task executor; it matches agent.Executor (cluster/agent) structurally.
type Executor interface {
	Type() string
	Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error
}

// Executors returns the replication executors of an agent: the five of
// replication tasks and the four of a switchover's steps
// (switchover_exec.go).
func Executors(cfg Config) ([]Executor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	if cfg.ReplicationPassfile == "" {
		cfg.Logger.Warn("no replication passfile (--replication-passfile, ATOMFED_REPLICATION_PASSFILE): subscriptions log in to other regions as "+
			cfg.ReplicationUser+" without a password, which works only where their PostgreSQL trusts that role", "user", cfg.ReplicationUser)
	}
	if cfg.ReplicationCA == "" {
		cfg.Logger.Warn("no replication CA (--replication-ca, ATOMFED_REPLICATION_CA): connections to other regions' PostgreSQL verify their " +
			"certificates (sslmode=verify-full) against the default roots, for subscriptions those of this region's PostgreSQL server's OS user (~/.postgresql/root.crt)")
	}
	m := newMetrics(cfg.Registerer)
	return []Executor{
		&publisherExec{cfg: cfg, kind: fsm.KindTenant, m: m},
		&publisherExec{cfg: cfg, kind: fsm.KindGlobal, m: m},
		&subscriberExec{cfg: cfg, kind: fsm.KindTenant, m: m},
		&subscriberExec{cfg: cfg, kind: fsm.KindGlobal, m: m},
		&syncExec{cfg: cfg, m: m},
		&fenceExec{cfg: cfg},
		&catchUpExec{cfg: cfg},
		&promoteExec{cfg: cfg},
		&detachExec{cfg: cfg},
	}, nil
}
