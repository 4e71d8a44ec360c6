package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/procs"
)

// Cluster is a benchmark cluster: `atomfed server` processes on loopback
// with the binary's default flags (so Raft's log is fsynced, as in
// production), their data and logs in a temporary directory.
type Cluster struct {
	*procs.Cluster
	// Dir holds the data directories; LogDir the server logs.
	Dir, LogDir string
	mc          *HTTP
}

func (c *Cluster) metricsClient() *HTTP {
	if c.mc == nil {
		c.mc = NewHTTP(1).Secure(c.Sec.TLSConfig(), procs.Token)
	}
	return c.mc
}

// StartCluster starts servers processes of bin with the default security
// and waits for an established leader.
func StartCluster(bin string, servers int, extra ...string) (*Cluster, error) {
	return StartClusterWith(procs.ClusterOptions{Bin: bin, Servers: servers, Extra: extra})
}

// StartClusterWith is StartCluster with every option; Dir and LogDir are
// set here.
func StartClusterWith(o procs.ClusterOptions) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "atomfed-bench-")
	if err != nil {
		return nil, err
	}
	logDir := filepath.Join(dir, "logs")
	o.Dir, o.LogDir = dir, logDir
	c, err := procs.NewCluster(o)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	bc := &Cluster{Cluster: c, Dir: dir, LogDir: logDir}
	if err := c.WaitFormed(60 * time.Second); err != nil {
		bc.Close(true)
		return nil, fmt.Errorf("%w (logs kept in %s)", err, logDir)
	}
	return bc, nil
}

// Close kills the servers and removes the data, keeping the logs when
// keepLogs is set.
func (c *Cluster) Close(keepLogs bool) {
	c.Cluster.Close()
	if !keepLogs {
		os.RemoveAll(c.Dir)
		return
	}
	for _, s := range c.Servers {
		os.RemoveAll(s.Config.DataDir)
	}
}

// WaitCaughtUp waits until s runs, knows the leader, and has applied
// everything the leader has (equal audit heads). Writes should be paused.
func (c *Cluster) WaitCaughtUp(ctx context.Context, s *procs.ServerProc) error {
	var last error
	for {
		leader, err := c.Leader(ctx)
		if err == nil {
			last = sameHead(ctx, leader, s)
			if last == nil {
				return nil
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not catch up: %v", s.ID(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func sameHead(ctx context.Context, leader, s *procs.ServerProc) error {
	hl, err := leader.Health(ctx)
	if err != nil {
		return err
	}
	hs, err := s.Health(ctx)
	if err != nil {
		return err
	}
	if !hs.KnownLeader {
		return errors.New(s.ID() + " knows no leader")
	}
	if hs.AuditHead != hl.AuditHead {
		return fmt.Errorf("%s is at audit index %d, the leader %s at %d", s.ID(), hs.AuditIndex, leader.ID(), hl.AuditIndex)
	}
	return nil
}

// Term returns the highest raft term the servers report on /metrics
// (atomfed_raft_term): it moves when a leader is elected.
func (c *Cluster) Term(ctx context.Context) (uint64, error) {
	var best uint64
	var last error
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/metrics", nil)
		if err != nil {
			return 0, err
		}
		body, err := c.metricsClient().Get(req)
		if err != nil {
			last = err
			continue
		}
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "atomfed_raft_term "); ok {
				var t float64
				if _, err := fmt.Sscan(v, &t); err == nil && uint64(t) > best {
					best = uint64(t)
				}
			}
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("no server reported its term: %v", last)
	}
	return best, nil
}
