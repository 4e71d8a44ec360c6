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

// Executors returns the five replication executors of an agent.
func Executors(cfg Config) ([]Executor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	if cfg.ReplicationPassfile == "" {
		cfg.Logger.Warn("no replication passfile (--replication-passfile, ATOMFED_REPLICATION_PASSFILE): subscriptions log in to other regions as "+
			cfg.ReplicationUser+" without a password, which works only where their PostgreSQL trusts that role", "user", cfg.ReplicationUser)
	}
	m := newMetrics(cfg.Registerer)
	return []Executor{
		&publisherExec{cfg: cfg, kind: fsm.KindTenant, m: m},
		&publisherExec{cfg: cfg, kind: fsm.KindGlobal, m: m},
		&subscriberExec{cfg: cfg, kind: fsm.KindTenant, m: m},
		&subscriberExec{cfg: cfg, kind: fsm.KindGlobal, m: m},
		&syncExec{cfg: cfg, m: m},
	}, nil
}
