package fsm

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestWatchTablesWakesOnlyWhatChanged: a watch on a set of tables is
// closed by a command that touches one of them, not by one that touches
// another table; a failed command wakes nobody; a restore wakes everyone;
// released watches are dropped.
func TestWatchTablesWakesOnlyWhatChanged(t *testing.T) {
	h := newHarness(t)
	seed(h)

	tenants, relT := h.f.WatchTables(TableTenants)
	regionsAgents, relRA := h.f.WatchTables(TableRegions, TableAgents)
	agentTasks, relAT := h.f.WatchTables(AgentTasksTable("eu-1"))
	all := h.f.WatchCh()

	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "beta", HomeRegion: "us-east"}, At: 200})
	if !closed(tenants) {
		t.Fatal("a tenant write did not wake the tenants watch")
	}
	if !closed(all) {
		t.Fatal("a tenant write did not wake WatchCh")
	}
	if closed(regionsAgents) || closed(agentTasks) {
		t.Fatal("a tenant write woke watches on regions/agents or on one agent's tasks")
	}
	relT()

	// A rejected command changes nothing and wakes nobody.
	if res := h.apply(TenantDeleteType, TenantDelete{ID: "nobody"}); res == nil || res.Err == nil {
		t.Fatalf("delete of a missing tenant accepted: %+v", res)
	}
	if closed(regionsAgents) || closed(agentTasks) {
		t.Fatal("a rejected command woke a table watch")
	}

	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("ap-south"), At: 201})
	if !closed(regionsAgents) {
		t.Fatal("a region write did not wake the regions+agents watch")
	}
	relRA()
	relRA() // idempotent
	if closed(agentTasks) {
		t.Fatal("a region write woke the watch on one agent's tasks")
	}

	// The same set shares one watch; a released one is dropped once its
	// last watcher leaves.
	again, relAgain := h.f.WatchTables(AgentTasksTable("eu-1"))
	if again != agentTasks {
		t.Fatal("two watches on the same tables got different channels")
	}
	relAgain()
	h.f.watchMu.Lock()
	n := len(h.f.tableWatches)
	h.f.watchMu.Unlock()
	if n != 1 {
		t.Fatalf("%d table watches open, want 1 (the agent's tasks)", n)
	}
	relAT()
	h.f.watchMu.Lock()
	n = len(h.f.tableWatches)
	h.f.watchMu.Unlock()
	if n != 0 {
		t.Fatalf("%d table watches open after every watcher released, want 0", n)
	}

	// A restore wakes every table watch.
	w, rel := h.f.WatchTables(AgentTasksTable("eu-1"))
	defer rel()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if err := h.f.Restore(ioNopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if !closed(w) {
		t.Fatal("a restore did not wake a table watch")
	}
}

// BenchmarkChangeWithWatchers measures what one change (a tenant write)
// costs while n blocking readers each watch one agent's tasks, the way
// GET /v1/agents/{node}/tasks?index= waits: wake=all is every reader
// waking on every change (WatchCh, what blocking queries did before),
// wake=tables is readers watching only their table (WatchTables), whom a
// tenant write does not concern. ns/op is the apply plus every woken
// reader re-reading and waiting again; cpu-ns/op is the process's CPU
// time (user+system) per change, which includes those wake-ups.
func BenchmarkChangeWithWatchers(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		for _, mode := range []string{"all", "tables"} {
			b.Run(fmt.Sprintf("watchers=%d/wake=%s", n, mode), func(b *testing.B) {
				h := newHarness(b)
				seed(h)
				var rounds atomic.Int64 // reads done by the watchers
				stop := make(chan struct{})
				var wg sync.WaitGroup
				for i := range n {
					table := AgentTasksTable(fmt.Sprintf("node-%d", i))
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							var ch <-chan struct{}
							release := func() {}
							if mode == "all" {
								ch = h.f.WatchCh()
							} else {
								ch, release = h.f.WatchTables(table)
							}
							h.f.Read(func(s *State) { _ = s.TableIndex(table) })
							rounds.Add(1)
							select {
							case <-ch:
								release()
							case <-stop:
								release()
								return
							}
						}
					}()
				}
				waitRounds := func(want int64) {
					for rounds.Load() < want {
						runtime.Gosched()
					}
				}
				waitRounds(int64(n))
				before := cpuTime()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					start := rounds.Load()
					h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: fmt.Sprintf("b-%d", i%100), HomeRegion: "us-east"}, At: int64(1000 + i)})
					if mode == "all" {
						waitRounds(start + int64(n))
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(cpuTime()-before)/float64(b.N), "cpu-ns/op")
				close(stop)
				wg.Wait()
			})
		}
	}
}

// cpuTime is the process's user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
