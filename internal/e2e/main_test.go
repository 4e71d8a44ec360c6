package e2e_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// binEnv names a prebuilt atomfed binary to test instead of building one.
const binEnv = "ATOMFED_BIN"

// atomfedBin is the binary under test, built once by TestMain.
var atomfedBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("internal/e2e: skipped in -short mode (it starts real server processes)")
		os.Exit(0)
	}
	atomfedBin = os.Getenv(binEnv)
	var tmp string
	if atomfedBin == "" {
		var err error
		if tmp, err = os.MkdirTemp("", "atomfed-e2e-bin-"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		start := time.Now()
		if atomfedBin, err = procs.BuildBinary(tmp, "e2e"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(tmp)
			os.Exit(1)
		}
		fmt.Printf("internal/e2e: built %s in %s\n", atomfedBin, time.Since(start).Round(time.Millisecond))
	} else if _, err := os.Stat(atomfedBin); err != nil {
		fmt.Fprintf(os.Stderr, "%s=%s: %v\n", binEnv, atomfedBin, err)
		os.Exit(1)
	}
	code := m.Run()
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// startCluster starts three `atomfed server` processes with the binary's
// default timings and waits for an established leader.
func startCluster(t *testing.T) *procs.Cluster {
	t.Helper()
	return procs.StartTestCluster(t, procs.ClusterOptions{
		Bin:  atomfedBin,
		Port: func() (int, error) { return testutil.FreePort(t), nil },
	})
}

// waitLeader waits for an established leader among the running servers.
func waitLeader(t *testing.T, c *procs.Cluster) *procs.ServerProc {
	t.Helper()
	l, err := c.WaitLeader(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ctx returns a context that ends with the test or after d.
func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// registerRegion registers the region every tenant of these tests lives in.
func registerRegion(t *testing.T, c *procs.Cluster, s *procs.ServerProc, name string) {
	t.Helper()
	_, err := c.Sec.MustSigningClient(s.URL, name).RegisterRegion(ctx(t, 10*time.Second), &fsm.Region{Name: name, URL: "http://" + name + ".example.com:8401"}, nil)
	if err != nil {
		t.Fatalf("register region %s via %s: %v", name, s.ID(), err)
	}
}

func newTenant(id string) *fsm.Tenant {
	return &fsm.Tenant{ID: id, HomeRegion: "us-east", Labels: map[string]string{"by": "e2e"}}
}
