package replication_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/internal/pglocal"
)

// pgSQL runs SQL on the databases of a test's PostgreSQL clusters: each
// connection closes with the test, and the first statement that fails
// fails the test.
type pgSQL struct {
	t   *testing.T
	ctx context.Context
	pgs map[string]*pglocal.Cluster
}

// connect opens a connection to region's database as the superuser.
func (p pgSQL) connect(region string) *pgx.Conn {
	p.t.Helper()
	c, err := p.pgs[region].Connect(p.ctx, pglocal.Database)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// exec runs stmts on c, in order.
func (p pgSQL) exec(c *pgx.Conn, stmts ...string) {
	p.t.Helper()
	for _, s := range stmts {
		if _, err := c.Exec(p.ctx, s); err != nil {
			p.t.Fatalf("%s: %v", s, err)
		}
	}
}
