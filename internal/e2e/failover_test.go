package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/testing/bench"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// startWriter runs a steady writer against every server of c until the
// returned stop function is called (or the test ends).
func startWriter(t *testing.T, c *procs.Cluster, prefix, region string, configure ...func(*bench.Writer)) (*bench.Writer, func()) {
	t.Helper()
	w := bench.NewWriter(bench.NewHTTP(4).Secure(c.Sec.TLSConfig(), procs.Token), c.URLs(), prefix, region)
	for _, f := range configure {
		f(w)
	}
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(wctx)
	}()
	stop := func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return w, stop
}

// TestKillLeaderUnderWrites: kill -9 of the leader while a client writes
// steadily. Another server becomes leader and acknowledges writes within 5 s
// of the kill (the time is logged; the benchmark measures it properly),
// every write acknowledged before and after the kill reads back
// linearizably, and the killed server, restarted with the same flags, data
// dir and ports, catches up: a stale read on it shows the last write and
// its audit head equals the leader's.
func TestKillLeaderUnderWrites(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	leader := waitLeader(t, c)
	registerRegion(t, c, leader, "us-east")

	w, stop := startWriter(t, c, "w", "us-east")
	if err := w.WaitAcks(ctx(t, 30*time.Second), 100); err != nil {
		t.Fatalf("steady writes before the kill: %v", err)
	}
	killAt := time.Now()
	if err := leader.Kill9(); err != nil {
		t.Fatal(err)
	}
	first, err := w.WaitAckSentAfter(ctx(t, 30*time.Second), killAt)
	if err != nil {
		t.Fatalf("no write acknowledged after killing leader %s: %v", leader.ID(), err)
	}
	failover := first.Acked.Sub(killAt)
	t.Logf("kill -9 of leader %s -> first acknowledged write (%s): %s", leader.ID(), first.ID, failover.Round(time.Millisecond))
	if failover > 5*time.Second {
		t.Errorf("a new leader took %s to acknowledge a write after the kill; want < 5s", failover)
	}
	newLeader := waitLeader(t, c)
	if newLeader == leader {
		t.Fatalf("leader is still %s after it was killed", leader.ID())
	}
	// Keep writing through the new leader for a while.
	if err := w.WaitAcks(ctx(t, 30*time.Second), len(w.Acks())+100); err != nil {
		t.Fatalf("steady writes after the failover: %v", err)
	}
	stop()

	acks := w.Acks()
	var beforeKill, afterKill int
	for _, a := range acks {
		if a.Acked.Before(killAt) {
			beforeKill++
		} else {
			afterKill++
		}
	}
	attempts, failures, _ := w.Stats()
	t.Logf("%d writes acknowledged before the kill, %d after; %d attempts, %d failed", beforeKill, afterKill, attempts, failures)
	if err := bench.Verify(ctx(t, time.Minute), newLeader.Client, acks); err != nil {
		t.Fatal(err)
	}

	// The killed server comes back with the same flags, data dir and ports
	// and catches up with the leader.
	if err := leader.Restart(); err != nil {
		t.Fatal(err)
	}
	last := acks[len(acks)-1]
	testutil.Eventually(t, 30*time.Second, func() error {
		tn, _, err := leader.Client.Tenant(ctx(t, 2*time.Second), last.ID, &client.QueryOptions{Consistency: "stale"})
		if err != nil {
			return fmt.Errorf("stale read of %s on restarted %s: %w", last.ID, leader.ID(), err)
		}
		if tn.Labels["seq"] != fmt.Sprint(last.Seq) {
			return fmt.Errorf("stale read of %s on restarted %s: labels %v", last.ID, leader.ID(), tn.Labels)
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		return sameAuditHead(ctx(t, 5*time.Second), newLeader, leader)
	})
}

// TestPausedLeaderIsReplaced: SIGSTOP of the leader under a steady writer.
// The other two elect a new leader that acknowledges writes; after SIGCONT
// the old leader steps down, follows the new one and catches up, and no
// acknowledged write is lost.
func TestPausedLeaderIsReplaced(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	leader := waitLeader(t, c)
	registerRegion(t, c, leader, "us-east")

	// A paused server accepts connections but never answers: the client
	// gives up on it after a second and sticks to the next server that
	// answers.
	w, stop := startWriter(t, c, "p", "us-east", func(w *bench.Writer) {
		w.AttemptTimeout, w.Sticky = time.Second, true
	})
	if err := w.WaitAcks(ctx(t, 30*time.Second), 100); err != nil {
		t.Fatalf("steady writes before the pause: %v", err)
	}
	stopAt := time.Now()
	if err := leader.Stop(); err != nil {
		t.Fatal(err)
	}
	first, err := w.WaitAckSentAfter(ctx(t, 30*time.Second), stopAt)
	if err != nil {
		t.Fatalf("no write acknowledged after pausing leader %s: %v", leader.ID(), err)
	}
	t.Logf("SIGSTOP of leader %s -> first acknowledged write: %s", leader.ID(), first.Acked.Sub(stopAt).Round(time.Millisecond))
	var next *procs.ServerProc
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, s := range c.Others(leader) {
			if h, err := s.Health(ctx(t, 2*time.Second)); err == nil && h.RaftState == "Leader" {
				next = s
				return nil
			}
		}
		return errors.New("neither of the other servers is leader")
	})
	if err := w.WaitAcks(ctx(t, 30*time.Second), len(w.Acks())+100); err != nil {
		t.Fatalf("steady writes while the old leader is paused: %v", err)
	}

	if err := leader.Cont(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		h, err := leader.Health(ctx(t, 2*time.Second))
		if err != nil {
			return err
		}
		if h.RaftState != "Follower" || h.Leader == leader.ID() || h.Leader == "" {
			return fmt.Errorf("resumed %s is %s and names %q leader", leader.ID(), h.RaftState, h.Leader)
		}
		return nil
	})
	if err := w.WaitAcks(ctx(t, 30*time.Second), len(w.Acks())+50); err != nil {
		t.Fatalf("steady writes after the old leader resumed: %v", err)
	}
	stop()
	now := waitLeader(t, c)
	if err := bench.Verify(ctx(t, time.Minute), now.Client, w.Acks()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d acknowledged writes read back; %s led while %s was paused, %s leads now", len(w.Acks()), next.ID(), leader.ID(), now.ID())
	testutil.Eventually(t, 30*time.Second, func() error { return sameAuditHead(ctx(t, 5*time.Second), now, leader) })
}

// sameAuditHead compares the /health audit heads of two servers.
func sameAuditHead(ctx context.Context, a, b *procs.ServerProc) error {
	ha, err := a.Health(ctx)
	if err != nil {
		return err
	}
	hb, err := b.Health(ctx)
	if err != nil {
		return err
	}
	if ha.AuditHead != hb.AuditHead || ha.AuditIndex != hb.AuditIndex {
		return fmt.Errorf("audit head of %s is %s@%d, of %s %s@%d", a.ID(), ha.AuditHead, ha.AuditIndex, b.ID(), hb.AuditHead, hb.AuditIndex)
	}
	return nil
}

// TestSIGTERMLeavesGracefully: SIGTERM makes a server leave. A follower
// exits 0 within 10 s, is removed from the Raft configuration, and the two
// that remain keep acknowledging writes. Restarted, it rejoins as a voter.
// Then SIGTERM of the leader hands leadership over (a new leader is there
// within a few seconds, without waiting for an election timeout), and the
// old leader exits 0 and is removed too.
func TestSIGTERMLeavesGracefully(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	leader := waitLeader(t, c)
	registerRegion(t, c, leader, "us-east")

	follower := c.Others(leader)[0]
	termAt := time.Now()
	if err := follower.Term(); err != nil {
		t.Fatal(err)
	}
	cleanExit(t, follower, termAt, 10*time.Second)
	testutil.Eventually(t, 10*time.Second, func() error { return notInConfiguration(leader, follower.ID()) })
	for _, s := range c.Running() {
		putTenant(t, s, "after-"+follower.ID()+"-via-"+s.ID())
	}

	// Back with the same data dir: it joins again and is re-added as a
	// voter.
	if err := follower.Restart(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error { return votersAre(leader, c.Servers) })
	testutil.Eventually(t, 30*time.Second, func() error { return sameAuditHead(ctx(t, 5*time.Second), leader, follower) })

	// SIGTERM of the leader: it transfers leadership before leaving.
	termAt = time.Now()
	if err := leader.Term(); err != nil {
		t.Fatal(err)
	}
	var next *procs.ServerProc
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, s := range c.Others(leader) {
			h, err := s.Health(ctx(t, 2*time.Second))
			if err != nil {
				return err
			}
			if h.RaftState == "Leader" {
				next = s
				return nil
			}
		}
		return errors.New("no other server is leader yet")
	})
	handover := time.Since(termAt)
	t.Logf("SIGTERM of leader %s -> %s is leader after %s", leader.ID(), next.ID(), handover.Round(time.Millisecond))
	if handover > 5*time.Second {
		t.Errorf("leadership moved %s after SIGTERM of the leader; want a transfer within 5s", handover)
	}
	cleanExit(t, leader, termAt, 10*time.Second)
	if !leader.LogContains("leadership transferred") {
		t.Errorf("the leader's log does not say it transferred leadership; see %s", leader.LogPath)
	}
	testutil.Eventually(t, 10*time.Second, func() error { return notInConfiguration(next, leader.ID()) })
	for _, s := range c.Running() {
		putTenant(t, s, "after-"+leader.ID()+"-via-"+s.ID())
	}
}

// cleanExit asserts that s, sent SIGTERM at termAt, exits with status 0
// within d of it.
func cleanExit(t *testing.T, s *procs.ServerProc, termAt time.Time, d time.Duration) {
	t.Helper()
	code, err := s.Wait(d - time.Since(termAt))
	if err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	t.Logf("%s exited with code %d %s after SIGTERM", s.ID(), code, time.Since(termAt).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("%s exited with %s after SIGTERM, want exit status 0", s.ID(), s.ExitStatus())
	}
}

func notInConfiguration(via *procs.ServerProc, id string) error {
	peers, err := via.Client.RaftConfiguration(context.Background(), &client.QueryOptions{Consistency: "stale"})
	if err != nil {
		return err
	}
	for _, p := range peers {
		if p.ID == id {
			return fmt.Errorf("%s is still in the raft configuration: %+v", id, peers)
		}
	}
	return nil
}

func votersAre(via *procs.ServerProc, want []*procs.ServerProc) error {
	peers, err := via.Client.RaftConfiguration(context.Background(), nil)
	if err != nil {
		return err
	}
	voters := map[string]bool{}
	for _, p := range peers {
		if p.Voter {
			voters[p.ID] = true
		}
	}
	for _, s := range want {
		if !voters[s.ID()] {
			return fmt.Errorf("%s is not a voter: %+v", s.ID(), peers)
		}
	}
	if len(peers) != len(want) {
		return fmt.Errorf("raft configuration has %d servers, want %d: %+v", len(peers), len(want), peers)
	}
	return nil
}

// putTenant writes a tenant through s and reads it back linearizably.
func putTenant(t *testing.T, s *procs.ServerProc, id string) {
	t.Helper()
	tn := newTenant(id)
	if _, err := s.Client.PutTenant(ctx(t, 10*time.Second), tn, nil); err != nil {
		t.Fatalf("PUT %s via %s: %v", id, s.ID(), err)
	}
	if _, _, err := s.Client.Tenant(ctx(t, 10*time.Second), id, nil); err != nil {
		t.Fatalf("GET %s via %s: %v", id, s.ID(), err)
	}
}
