package replication_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// writer inserts acme rows into the home without pause, and updates and
// deletes some of them, until stopped.
type writer struct {
	n      atomic.Int64
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	failed error
}

func startWriter(t *testing.T, f *fed, region, tenant string, from int64) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	conn := f.conn(region)
	go func() {
		defer close(w.done)
		for i := from; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := conn.Exec(ctx, `INSERT INTO orders (tenant_id, id, amount, note) VALUES ($1, $2, $3, 'load')`, tenant, i, i)
			if err == nil && i%5 == 0 {
				_, err = conn.Exec(ctx, `UPDATE orders SET note = 'upd', amount = amount + 1 WHERE tenant_id = $1 AND id = $2`, tenant, i-3)
			}
			if err == nil && i%11 == 0 {
				_, err = conn.Exec(ctx, `DELETE FROM orders WHERE tenant_id = $1 AND id = $2`, tenant, i-7)
			}
			cancel()
			if err != nil {
				w.mu.Lock()
				w.failed = err
				w.mu.Unlock()
				return
			}
			w.n.Add(1)
		}
	}()
	return w
}

func (w *writer) waitFor(t *testing.T, more int64) {
	t.Helper()
	target := w.n.Load() + more
	testutil.Eventually(t, 60*time.Second, func() error {
		w.mu.Lock()
		err := w.failed
		w.mu.Unlock()
		if err != nil {
			t.Fatalf("the writer failed: %v", err)
		}
		if n := w.n.Load(); n < target {
			return fmt.Errorf("%d writes, waiting for %d", n, target)
		}
		return nil
	})
}

func (w *writer) halt(t *testing.T) int64 {
	close(w.stop)
	<-w.done
	if w.failed != nil {
		t.Fatalf("the writer failed: %v", w.failed)
	}
	return w.n.Load()
}

// TestMirrorCrashUnderWriteLoadLosesAndDuplicatesNothing kills a mirror's
// PostgreSQL with SIGKILL while the home takes writes, restarts it, and
// compares count and checksum of acme's rows in every region.
func TestMirrorCrashUnderWriteLoadLosesAndDuplicatesNothing(t *testing.T) {
	f := newFed(t, "a", "b", "c")
	f.exec("a", ordersDDL, `INSERT INTO orders SELECT 'acme', g, g, 'seed', 'e@x' FROM generate_series(1, 100) g`)
	f.putTenant(acme("b", "c"))
	f.waitStreaming("acme", "b", "c")

	w := startWriter(t, f, "a", "acme", 1000)
	w.waitFor(t, 300)
	if err := f.pg["b"].Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := w.n.Load()
	// The crash surfaces in the API: b's executor cannot reach its database.
	testutil.Eventually(t, 30*time.Second, func() error {
		v, err := f.replication("acme")
		if err != nil {
			return err
		}
		m := mirror(v, "b")
		if m == nil || len(m.Issues) == 0 || m.Issues[0].Code != fsm.IssueDatabaseUnreachable {
			return fmt.Errorf("mirror b: %s", js(m))
		}
		return nil
	})
	w.waitFor(t, 300)
	if err := f.pg["b"].Restart(f.ctx(time.Minute)); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, 300)
	total := w.halt(t)
	f.waitStreaming("acme", "b", "c")
	sum := f.waitSame("orders", "acme", orderCols, "a", "b", "c")
	t.Logf("%d writes (%d before the kill); acme's rows agree in a, b and c: %s", total, killedAt, sum)
	if n, _ := strconv.Atoi(strings.Split(sum, ":")[0]); n < int(total)/2 {
		t.Fatalf("acme has %s after %d writes", sum, total)
	}
	if dup := f.mustValue("b", `SELECT count(*) - count(DISTINCT (tenant_id, id)) FROM orders`); dup != "0" {
		t.Fatalf("mirror b holds %s duplicate keys", dup)
	}
}
