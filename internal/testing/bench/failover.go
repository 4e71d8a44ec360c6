package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/procs"
)

// FailoverRound is one kill -9 of the leader under a steady writer.
type FailoverRound struct {
	Round             int
	Killed, NewLeader string
	// KillToAck is the time from the kill to the first acknowledged write
	// sent after it: how long clients could not write.
	KillToAck time.Duration
	// Before and After count acknowledged writes on either side of the
	// kill; Verified those read back linearizably afterwards.
	Before, After, Verified int
	// Attempts and Failures count the writer's attempts during the round.
	Attempts, Failures int
	// Rejoin is the time from restarting the killed server to it having
	// caught up with the leader.
	Rejoin time.Duration
}

// FailoverOptions shape a failover round.
type FailoverOptions struct {
	HTTP   *HTTP
	Region string
	// Steady is how long the writer runs before the kill and after the
	// first acknowledged write that follows it.
	Steady time.Duration
}

// Failover runs one round on c: a steady writer sends to every server in turn,
// the leader is killed with SIGKILL, the round measures the time to the
// first acknowledged write after the kill, keeps writing, then reads every
// acknowledged write back linearizably (an error wrapping ErrLostWrites
// means one was lost), restarts the killed server and waits until it has
// caught up.
func Failover(ctx context.Context, c *procs.Cluster, round int, o FailoverOptions) (FailoverRound, error) {
	r := FailoverRound{Round: round}
	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		return r, err
	}
	r.Killed = leader.ID()
	w := NewWriter(o.HTTP, c.URLs(), fmt.Sprintf("f%d", round), o.Region)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(wctx)
	}()
	stopWriter := func() {
		stop()
		<-done
	}
	defer stopWriter()

	tctx, cancel := context.WithTimeout(ctx, 30*time.Second+o.Steady)
	defer cancel()
	start := time.Now()
	if err := w.WaitAcks(tctx, 20); err != nil {
		return r, fmt.Errorf("writes before the kill: %w", err)
	}
	sleep(ctx, o.Steady-time.Since(start))

	killAt := time.Now()
	if err := leader.Kill9(); err != nil {
		return r, err
	}
	first, err := w.WaitAckSentAfter(tctx, killAt)
	if err != nil {
		return r, fmt.Errorf("after killing leader %s: %w", leader.ID(), err)
	}
	r.KillToAck = first.Acked.Sub(killAt)
	sleep(ctx, o.Steady)
	stopWriter()

	acks := w.Acks()
	for _, a := range acks {
		if a.Acked.Before(killAt) {
			r.Before++
		} else {
			r.After++
		}
	}
	r.Attempts, r.Failures, _ = w.Stats()
	newLeader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		return r, err
	}
	r.NewLeader = newLeader.ID()
	vctx, vcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer vcancel()
	if err := Verify(vctx, newLeader.Client, acks); err != nil {
		return r, fmt.Errorf("round %d: %w", round, err)
	}
	r.Verified = len(acks)

	restartAt := time.Now()
	if err := leader.Restart(); err != nil {
		return r, err
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
	defer ccancel()
	if err := c.WaitCaughtUp(cctx, leader); err != nil {
		return r, err
	}
	r.Rejoin = time.Since(restartAt)
	return r, nil
}
