package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// waitHomeConfirmed waits until the agent of the home database of conn has
// confirmed, since its PostgreSQL last started, that it is still tenant's
// home, and returns how long that took: until then the home guard refuses
// the tenant's writes there (WF002, replication/home_guard.go), by design.
func waitHomeConfirmed(t *testing.T, cx context.Context, conn *pgx.Conn, tenant string) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.Eventually(t, time.Minute, func() error {
		var ok bool
		err := conn.QueryRow(cx, `SELECT postmaster_start = pg_postmaster_start_time() FROM atomfed.home_confirmations WHERE tenant_id = $1`, tenant).Scan(&ok)
		if err != nil || !ok {
			return fmt.Errorf("%s's home not confirmed since PostgreSQL started (%v)", tenant, err)
		}
		return nil
	})
	return time.Since(start)
}
