package main

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi"
)

func newServerCmd() *cobra.Command {
	var o serverOptions
	var logLevel string
	var logJSON bool
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run an atomfed server (a Raft voter or non-voter of the federation)",
		Long: `Run an atomfed server.

Three servers started with --bootstrap-expect 3 and --join pointing at each
other's Serf addresses form a cluster. Every server needs FEDERATION_TOKEN
(the bootstrap management token, the same everywhere), TLS material
(--tls-ca, --tls-cert, --tls-key) and a gossip key (--encrypt-file); its signing
key is COSIGN_KEY_PATH (password COSIGN_PASSWORD) or one it makes in its
data dir. SIGTERM or SIGINT leaves gracefully:
a leader first hands leadership over, the server leaves Serf so that the
leader removes it from the Raft configuration, and the process exits 0.

At start the server checks its critical infrastructure: Vault (VAULT_ADDR)
and its signing key (COSIGN_KEY_PATH, COSIGN_PASSWORD). When one is missing
it runs in SIMULATION_MODE, says so in its log, /health, /global-status and
/v1/policy/status, and lists the parts that are simulated. With
SIMULATION_MODE=false it refuses to start instead; SIMULATION_MODE=true
simulates even with everything present.`,
		Example: `  atomfed server --node s1 --region us-east --data-dir /var/lib/atomfed \
    --http-addr 10.0.0.1:8401 --raft-addr 10.0.0.1:8300 --serf-addr 10.0.0.1:8301 \
    --bootstrap-expect 3 --join 10.0.0.2:8301,10.0.0.3:8301`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Region == "" {
				o.Region = os.Getenv("PRIMARY_REGION")
			}
			o.Join = splitList(o.Join)
			o.Logger = newLogger(o.Node, logLevel, logJSON)
			o.Security.Token = os.Getenv("FEDERATION_TOKEN")
			o.Security.KeyPath = os.Getenv("COSIGN_KEY_PATH")
			return runServer(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Node, "node", "", "unique node name (a DNS label); also the Raft server id")
	f.StringVar(&o.Region, "region", "", "region this server runs in (default $PRIMARY_REGION)")
	f.StringVar(&o.DataDir, "data-dir", "", "directory for the Raft log, snapshots and Serf state")
	f.StringVar(&o.HTTPAddr, "http-addr", "127.0.0.1:8401", "HTTP API listen address")
	f.StringVar(&o.HTTPAdvertise, "http-advertise", "", "HTTP base URL other servers use to reach this one (default http://<http-addr>)")
	f.StringVar(&o.RaftAddr, "raft-addr", "127.0.0.1:8300", "Raft transport listen address")
	f.StringVar(&o.RaftAdvertise, "raft-advertise", "", "Raft address other servers dial (default the listen address)")
	f.StringVar(&o.SerfAddr, "serf-addr", "127.0.0.1:8301", "Serf gossip listen address")
	f.StringVar(&o.SerfAdvertise, "serf-advertise", "", "Serf address other members use (default the listen address)")
	f.IntVar(&o.BootstrapExpect, "bootstrap-expect", 0, "form a new cluster once this many servers are visible (0: join an existing one)")
	f.StringSliceVar(&o.Join, "join", nil, "Serf addresses of existing members to join (comma-separated; retried until one answers)")
	f.BoolVar(&o.NonVoter, "non-voter", false, "join as a Raft non-voter (replicates, serves stale reads, no vote)")
	f.IntVar(&o.RaftMultiplier, "raft-multiplier", 1, "scale Raft timings (150 ms heartbeat timeout x N) for slow links: 1 for a LAN, 3 for RTTs up to 90 ms, 7 up to 210 ms")
	f.StringVar(&o.RaftLogStore, "raft-log-store", "segment", "raft log store: segment (one fdatasync per append) or boltdb (the log in raft.db; two); a boltdb log moves to segments on start, not back")
	f.DurationVar(&o.DeadServerCleanup, "dead-server-cleanup", 30*time.Second, "remove a server Serf reports failed for this long (0 disables)")
	f.DurationVar(&o.FailoverDetect, "failover-detect", fsm.DefaultFailoverDetectMS*time.Millisecond, "how long a tenant's home region must be seen down (every agent failed) before its automatic failover policy fails it over")
	addSecurityFlags(f, &o.Security)
	f.BoolVar(&o.EnableDebug, "enable-debug", false, "serve Go pprof profiles under /debug/pprof/ (operator token required)")
	f.BoolVar(&o.AnonymousRegionList, "anonymous-region-list", false, "serve GET /region/list (region names, URLs, tiers, health) without a token, over plain HTTP too")
	f.IntVar(&o.MaxBlockingQueries, "max-blocking-queries", httpapi.DefaultMaxBlockingQueries, "blocking queries (?index=) this server holds open at once; more are answered 429 with Retry-After")
	f.StringVar(&o.RemoteWriteURL, "remote-write-url", "", "send the global metrics view to this Prometheus remote-write endpoint (e.g. a global Prometheus' /api/v1/write or Mimir's /api/v1/push) every 5 s")
	f.IntVar(&o.MaxBlockingPerToken, "max-blocking-per-token", httpapi.DefaultMaxBlockingPerToken, "blocking queries one token (accessor) may hold open on this server; more are answered 429 with Retry-After")
	f.StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	f.BoolVar(&logJSON, "log-json", false, "log as JSON lines")
	return cmd
}

func runServer(o serverOptions) error {
	n, err := startServer(o)
	if err != nil {
		return err
	}
	n.log.Info("serving HTTP API", "url", n.url)
	return runUntilSignal(n.log, n.http, n.leave, n.shutdown, "signal received; leaving gracefully", "left the cluster; bye")
}

func newLogger(node, level string, json bool) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "atomfed",
		Level:      hclog.LevelFromString(level),
		JSONFormat: json,
		Output:     os.Stderr,
		Exclude:    shutdownNoise,
	}).With("node", node)
}

// stopping is set once this process begins a deliberate stop (a signal).
var stopping atomic.Bool

// shutdownNoise drops, once the process is stopping, the errors that Raft,
// memberlist and net/http log when the process closes its own sockets or
// its peers in the same stop are already gone: on a clean Ctrl-C they are
// expected and say nothing wrong. Before a stop every such line is kept.
func shutdownNoise(level hclog.Level, msg string, args ...any) bool {
	if !stopping.Load() || level < hclog.Warn {
		return false
	}
	text := fmt.Sprint(append([]any{msg}, args...)...)
	return strings.Contains(text, "use of closed network connection") ||
		strings.Contains(text, "connection refused") ||
		strings.Contains(text, "raft is already shutdown") ||
		strings.Contains(text, "Shutdown without a Leave")
}

// splitList flattens comma-separated values and drops empty ones.
func splitList(in []string) []string {
	var out []string
	for _, v := range in {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
