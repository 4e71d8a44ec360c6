// Package precheck checks the infrastructure a federation needs (the global
// registry, Vault, a cosign signing key and PostgreSQL) and decides, as the
// seed rules it, whether a pipeline may PROCEED, PROCEED_SIMULATION or must
// BLOCK. Servers and agents run the same checks at start to decide whether
// they run in SIMULATION_MODE (see node.go).
//
// Nothing here reads the environment: cmd builds a Config from it. No secret
// reaches an output: every detail passes through a Redactor.
package precheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Check names.
const (
	Registry = "registry"
	Vault    = "vault"
	Cosign   = "cosign"
	Postgres = "postgres"
)

// AllChecks lists the checks of the precheck, in report order: the seed's
// four, the only ones Decide weighs.
var AllChecks = []string{Registry, Vault, Cosign, Postgres}

// The infrastructure of single components, checked and reported by the
// precheck but never weighed by Decide: the seed's rules decide on the four
// checks above alone. A component without its part says so itself.
const (
	// Redis is REDIS_URL, where the edge controller publishes the routing
	// table.
	Redis = "redis"
	// Prometheus is PROM_URL, the region Prometheus the metrics
	// aggregator federates.
	Prometheus = "prometheus"
	// S3 is S3_ENDPOINT, the disaster recovery repository.
	S3 = "s3"
)

// OptionalChecks lists the components' checks, in report order.
var OptionalChecks = []string{Redis, Prometheus, S3}

// Statuses, in the seed's vocabulary. A failed check that is configured is
// "ERROR:<reason>" (see ErrorStatus).
const (
	StatusUp         = "UP"          // registry, vault
	StatusOK         = "OK"          // cosign
	StatusReachable  = "REACHABLE"   // postgres
	StatusMissing    = "MISSING"     // vault, cosign, postgres: not configured
	StatusNoRegistry = "NO_REGISTRY" // registry: nothing answers
	errorPrefix      = "ERROR:"
)

// ErrorStatus returns the status of a configured check that failed.
func ErrorStatus(reason string) string { return errorPrefix + reason }

// Decisions.
const (
	Proceed           = "PROCEED"
	ProceedSimulation = "PROCEED_SIMULATION"
	Block             = "BLOCK"
)

// DefaultRegistryURL is the registry checked when GLOBAL_REGISTRY_URL is
// unset.
const DefaultRegistryURL = "http://localhost:8401"

// DefaultTimeout bounds each check (the seed's 3 s for PostgreSQL).
const DefaultTimeout = 3 * time.Second

// Check is the result of one check.
type Check = structs.InfraCheck

// Healthy reports whether a check status counts as present and working.
func Healthy(status string) bool {
	return status == StatusUp || status == StatusOK || status == StatusReachable
}

// Config is what the checks look at. cmd fills it from GLOBAL_REGISTRY_URL,
// VAULT_ADDR, COSIGN_KEY_PATH, COSIGN_PASSWORD and POSTGRES_DSN.
type Config struct {
	// RegistryURL is the base URL of the global registry (an atomfed
	// server); empty means DefaultRegistryURL.
	RegistryURL string
	// VaultAddr is Vault's base URL; empty means Vault is missing.
	VaultAddr string
	// CosignKeyPath names the signing key; empty means it is missing.
	// CosignPassword decrypts it.
	CosignKeyPath  string
	CosignPassword []byte
	// PostgresDSN is a pgx connection string (URL or keyword/value);
	// empty means PostgreSQL is missing.
	PostgresDSN string
	// Secrets are more values that must never appear in an output (for
	// example PGPASSWORD).
	Secrets []string
	// Timeout bounds each check; 0 means DefaultTimeout.
	Timeout time.Duration
	// Transport carries the HTTP checks; nil uses a fresh transport that
	// honours the proxy environment.
	Transport http.RoundTripper
	// CAFile, when set, is trusted besides the system roots for https
	// targets (the federation CA, ATOMFED_CACERT).
	CAFile string
	// RedisURL (REDIS_URL), PromURL (PROM_URL) and S3Endpoint
	// (S3_ENDPOINT) are the components' infrastructure (OptionalChecks);
	// empty means missing.
	RedisURL, PromURL, S3Endpoint string
}

// tlsConfig trusts the system roots and CAFile.
func (c *Config) tlsConfig() *tls.Config {
	if c.CAFile == "" {
		return nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if b, err := os.ReadFile(c.CAFile); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func (c *Config) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Config) registryURL() string {
	if c.RegistryURL == "" {
		return DefaultRegistryURL
	}
	return c.RegistryURL
}

// Checks holds the result of every check that ran, by name.
type Checks map[string]Check

// Run runs the named checks (the seed's four when names is empty) concurrently,
// each bounded by the config's timeout, and returns their redacted results.
func Run(ctx context.Context, cfg Config, names ...string) Checks {
	if len(names) == 0 {
		names = AllChecks
	}
	red := NewRedactor(cfg)
	tr := cfg.Transport
	if tr == nil {
		t := &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true, TLSClientConfig: cfg.tlsConfig()}
		defer t.CloseIdleConnections()
		tr = t
	}
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	out := Checks{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range names {
		fn := checkFuncs[n]
		if fn == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, cfg.timeout())
			defer cancel()
			start := time.Now()
			c := fn(cctx, &cfg, hc)
			c.DurationMS = float64(time.Since(start).Microseconds()) / 1000
			c.Detail, c.Target = oneLine(red.Redact(c.Detail)), red.Redact(c.Target)
			for i, w := range c.Findings {
				c.Findings[i] = oneLine(red.Redact(w))
			}
			mu.Lock()
			out[n] = c
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

var checkFuncs = map[string]func(context.Context, *Config, *http.Client) Check{
	Registry: checkRegistry,
	Vault:    checkVault,
	Cosign:   checkCosign,
	Postgres: checkPostgres,

	Redis:      checkRedis,
	Prometheus: checkPrometheus,
	S3:         checkS3,
}

// Decide applies the seed's rules to the four checks: the registry missing
// blocks; otherwise everything up, ok and reachable proceeds, and anything
// missing or in error proceeds in simulation. reasons name every check that
// is not healthy.
func Decide(c Checks) (decision string, reasons []string) {
	for _, n := range AllChecks {
		r, ok := c[n]
		if !ok {
			reasons = append(reasons, n+": not checked")
			continue
		}
		if !Healthy(r.Status) {
			reasons = append(reasons, n+": "+r.Status+" ("+r.Detail+")")
		}
	}
	switch {
	case !Healthy(c[Registry].Status):
		return Block, reasons
	case len(reasons) > 0:
		return ProceedSimulation, reasons
	default:
		return Proceed, nil
	}
}

// checkRegistry answers UP when GET <registry>/health answers 2xx.
func checkRegistry(ctx context.Context, cfg *Config, hc *http.Client) Check {
	base := strings.TrimRight(cfg.registryURL(), "/")
	target := base + "/health"
	c := Check{Target: RedactURL(target)}
	resp, err := get(ctx, hc, target)
	if err != nil {
		c.Status, c.Detail = StatusNoRegistry, "no registry answers at "+c.Target+": "+describe(err)
		return c
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		c.Status, c.Detail = StatusNoRegistry, fmt.Sprintf("%s answered HTTP %d, not a healthy registry", c.Target, resp.StatusCode)
		return c
	}
	c.Status = StatusUp
	var h structs.Health
	if json.Unmarshal(body, &h) == nil && h.Node != "" {
		c.Detail = fmt.Sprintf("atomfed %s (node %s, region %s, raft %s, leader %q, state index %d)", h.Status, h.Node, h.Region, h.RaftState, h.Leader, h.Index)
	} else {
		c.Detail = fmt.Sprintf("%s answered HTTP %d", c.Target, resp.StatusCode)
	}
	return c
}

// checkVault answers UP when $VAULT_ADDR/v1/sys/health says Vault is
// initialized and unsealed (200 active, 429 standby, 472 DR secondary, 473
// performance standby, as Vault documents them).
func checkVault(ctx context.Context, cfg *Config, hc *http.Client) Check {
	if cfg.VaultAddr == "" {
		return Check{Status: StatusMissing, Detail: "VAULT_ADDR is not set"}
	}
	target := strings.TrimRight(cfg.VaultAddr, "/") + "/v1/sys/health"
	c := Check{Target: RedactURL(target)}
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.Status, c.Detail = ErrorStatus("invalid_url"), "VAULT_ADDR must be an http or https URL"
		return c
	}
	resp, err := get(ctx, hc, target)
	if err != nil {
		c.Status, c.Detail = ErrorStatus(reasonOf(err)), "vault at "+c.Target+": "+describe(err)
		return c
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch resp.StatusCode {
	case 200, 429, 472, 473:
		c.Status = StatusUp
		c.Detail = fmt.Sprintf("vault health answered HTTP %d (%s)", resp.StatusCode, vaultState[resp.StatusCode])
	case 501:
		c.Status, c.Detail = ErrorStatus("not_initialized"), "vault answered HTTP 501: not initialized"
	case 503:
		c.Status, c.Detail = ErrorStatus("sealed"), "vault answered HTTP 503: sealed"
	default:
		c.Status, c.Detail = ErrorStatus(fmt.Sprintf("http_%d", resp.StatusCode)), fmt.Sprintf("%s answered HTTP %d", c.Target, resp.StatusCode)
	}
	return c
}

var vaultState = map[int]string{200: "initialized, unsealed, active", 429: "unsealed standby", 472: "disaster recovery secondary", 473: "performance standby"}

// checkCosign answers OK when COSIGN_KEY_PATH loads as a signing key with
// COSIGN_PASSWORD.
func checkCosign(ctx context.Context, cfg *Config, _ *http.Client) Check {
	if cfg.CosignKeyPath == "" {
		return Check{Status: StatusMissing, Detail: "COSIGN_KEY_PATH is not set"}
	}
	c := Check{Target: cfg.CosignKeyPath}
	if _, err := os.Stat(cfg.CosignKeyPath); err != nil {
		reason := "unreadable"
		if errors.Is(err, os.ErrNotExist) {
			reason = "not_found"
		}
		c.Status, c.Detail = ErrorStatus(reason), "COSIGN_KEY_PATH: "+err.Error()
		return c
	}
	s, err := signing.LoadSigner(cfg.CosignKeyPath, cfg.CosignPassword)
	if err != nil {
		c.Status, c.Detail = ErrorStatus("bad_key"), err.Error()
		return c
	}
	c.Status, c.Detail = StatusOK, "ECDSA P-256 signing key, key id "+s.KeyID
	return c
}

// checkPostgres answers REACHABLE when pgx connects to POSTGRES_DSN and
// the server answers a ping within the timeout.
func checkPostgres(ctx context.Context, cfg *Config, _ *http.Client) Check {
	if cfg.PostgresDSN == "" {
		return Check{Status: StatusMissing, Detail: "POSTGRES_DSN is not set"}
	}
	c := Check{Target: RedactDSN(cfg.PostgresDSN)}
	pc, err := pgx.ParseConfig(cfg.PostgresDSN)
	if err != nil {
		c.Status, c.Detail = ErrorStatus("invalid_dsn"), "POSTGRES_DSN does not parse: "+err.Error()
		return c
	}
	if deadline, ok := ctx.Deadline(); ok {
		pc.ConnectTimeout = time.Until(deadline)
	}
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		c.Status, c.Detail = ErrorStatus(pgReason(err)), err.Error()
		return c
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	var version string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		c.Status, c.Detail = ErrorStatus(pgReason(err)), "connected but the server does not answer: "+err.Error()
		return c
	}
	c.Status = StatusReachable
	c.Detail = fmt.Sprintf("connected to PostgreSQL %s at %s:%d, database %q as %q", version, pc.Host, pc.Port, pc.Database, pc.User)
	findings, note := postgresFindings(ctx, conn)
	c.Findings = findings
	if note != "" {
		c.Detail += "; " + note
	}
	return c
}

// pgReason names why a PostgreSQL connection failed.
func pgReason(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "28P01" || pe.Code == "28000":
			return "auth_failed"
		case pe.Code == "3D000":
			return "no_database"
		case strings.HasPrefix(pe.Code, "57P"):
			return "server_unavailable"
		default:
			return "sqlstate_" + pe.Code
		}
	}
	if pgconn.Timeout(err) {
		return "timeout"
	}
	return reasonOf(err)
}

func get(ctx context.Context, hc *http.Client, target string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	return hc.Do(req)
}

// reasonOf names a network failure in one word.
func reasonOf(err error) string {
	var dnsErr *net.DNSError
	var urlErr *url.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "unreachable"
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.As(err, &dnsErr):
		return "unresolvable"
	case strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:"):
		return "tls"
	case errors.As(err, &urlErr) && urlErr.Op == "parse":
		return "invalid_url"
	case strings.Contains(err.Error(), "unsupported protocol scheme"):
		return "invalid_url"
	default:
		return "connect_failed"
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// oneLine folds a multi-line error (pgx lists every address it tried on a
// line of its own) into one line.
func oneLine(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(lines, " ")
}

// describe shortens an HTTP client error for a detail line.
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer within the timeout"
	}
	return err.Error()
}

// checkRedis answers REACHABLE when REDIS_URL answers PING (with the URL's
// credentials, if any).
func checkRedis(ctx context.Context, cfg *Config, _ *http.Client) Check {
	if cfg.RedisURL == "" {
		return Check{Status: StatusMissing, Detail: "REDIS_URL is not set: the edge controller keeps its routing table in memory only"}
	}
	c := Check{Target: RedactURL(cfg.RedisURL)}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		c.Status, c.Detail = ErrorStatus("invalid_url"), "REDIS_URL does not parse: "+err.Error()
		return c
	}
	if deadline, ok := ctx.Deadline(); ok {
		opt.DialTimeout, opt.ReadTimeout = time.Until(deadline), time.Until(deadline)
	}
	opt.MaxRetries = -1
	quietRedis.Do(func() { redis.SetLogger(silentRedisLog{}) })
	rc := redis.NewClient(opt)
	defer rc.Close()
	pong, err := rc.Ping(ctx).Result()
	if err != nil {
		reason := reasonOf(err)
		if strings.Contains(err.Error(), "NOAUTH") || strings.Contains(err.Error(), "WRONGPASS") {
			reason = "auth"
		}
		c.Status, c.Detail = ErrorStatus(reason), "redis at "+opt.Addr+": "+err.Error()
		return c
	}
	c.Status, c.Detail = StatusReachable, fmt.Sprintf("redis at %s answered PING with %s", opt.Addr, pong)
	return c
}

// checkPrometheus answers UP when $PROM_URL/-/ready answers 200.
func checkPrometheus(ctx context.Context, cfg *Config, hc *http.Client) Check {
	if cfg.PromURL == "" {
		return Check{Status: StatusMissing, Detail: "PROM_URL is not set: the metrics aggregator collects the regions' atomfed nodes only"}
	}
	target := strings.TrimRight(cfg.PromURL, "/") + "/-/ready"
	c := Check{Target: RedactURL(target)}
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.Status, c.Detail = ErrorStatus("invalid_url"), "PROM_URL must be an http or https URL"
		return c
	}
	resp, err := get(ctx, hc, target)
	if err != nil {
		c.Status, c.Detail = ErrorStatus(reasonOf(err)), "prometheus at "+c.Target+": "+describe(err)
		return c
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		c.Status, c.Detail = ErrorStatus(fmt.Sprintf("http_%d", resp.StatusCode)), fmt.Sprintf("%s answered HTTP %d (not ready)", c.Target, resp.StatusCode)
		return c
	}
	c.Status, c.Detail = StatusUp, "prometheus is ready"
	return c
}

// checkS3 answers REACHABLE when S3_ENDPOINT answers HTTP at all: an
// anonymous request gets 403 or 400 from an S3 server, which proves it is
// there without credentials ever being sent.
func checkS3(ctx context.Context, cfg *Config, hc *http.Client) Check {
	if cfg.S3Endpoint == "" {
		return Check{Status: StatusMissing, Detail: "S3_ENDPOINT is not set: disaster recovery repositories are file system paths"}
	}
	c := Check{Target: RedactURL(cfg.S3Endpoint)}
	if u, err := url.Parse(cfg.S3Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.Status, c.Detail = ErrorStatus("invalid_url"), "S3_ENDPOINT must be an http or https URL"
		return c
	}
	resp, err := get(ctx, hc, cfg.S3Endpoint)
	if err != nil {
		c.Status, c.Detail = ErrorStatus(reasonOf(err)), "S3 endpoint "+c.Target+": "+describe(err)
		return c
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	c.Status, c.Detail = StatusReachable, fmt.Sprintf("%s answered HTTP %d to an anonymous request", c.Target, resp.StatusCode)
	return c
}

// quietRedis silences go-redis's own logger once: the check reports what
// failed in its status, and the library's lines would only repeat it on
// stderr.
var quietRedis sync.Once

type silentRedisLog struct{}

func (silentRedisLog) Printf(context.Context, string, ...any) {}
