package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// ReportDatabase records the endpoint of the agent's region database,
// signed with the client's key (the agent's).
func (c *Client) ReportDatabase(ctx context.Context, r *fsm.RegionDatabaseReport) error {
	payload := wire.DatabaseReport{Endpoint: r.Endpoint, Node: r.Node}
	_, err := c.signedDo(ctx, http.MethodPut, "/v1/regions/"+url.PathEscape(r.Region)+"/database", nil, payload, nil, nil)
	return err
}

// RegionDatabase reads a region's database endpoint.
func (c *Client) RegionDatabase(ctx context.Context, region string, q *QueryOptions) (*fsm.RegionDatabase, error) {
	var out fsm.RegionDatabase
	_, err := c.Do(ctx, http.MethodGet, "/v1/regions/"+url.PathEscape(region)+"/database", q.values(nil), nil, &out)
	return &out, err
}

// TenantReplication reads a tenant's replication: per-mirror state, lag
// and last error.
func (c *Client) TenantReplication(ctx context.Context, id string, q *QueryOptions) (*fsm.TenantReplication, *Meta, error) {
	var out fsm.TenantReplication
	m, err := c.Do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(id)+"/replication", q.values(nil), nil, &out)
	return &out, m, err
}

// Replication reads the federation's replication summary.
func (c *Client) Replication(ctx context.Context, q *QueryOptions) (*fsm.ReplicationSummary, error) {
	var out fsm.ReplicationSummary
	_, err := c.Do(ctx, http.MethodGet, "/v1/replication", q.values(nil), nil, &out)
	return &out, err
}

// PutGlobalTable creates or replaces a global table.
func (c *Client) PutGlobalTable(ctx context.Context, g *fsm.GlobalTable, cas *uint64) (*fsm.GlobalTable, error) {
	var out fsm.GlobalTable
	_, err := c.Do(ctx, http.MethodPut, "/v1/global-tables/"+url.PathEscape(g.Name), casQuery(cas), g, &out)
	return &out, err
}

// DeleteGlobalTable stops replicating a global table.
func (c *Client) DeleteGlobalTable(ctx context.Context, name string, cas *uint64) error {
	_, err := c.Do(ctx, http.MethodDelete, "/v1/global-tables/"+url.PathEscape(name), casQuery(cas), nil, nil)
	return err
}

// ReportDatabase implements the agent's database report over the pool.
func (p *Pool) ReportDatabase(ctx context.Context, r *fsm.RegionDatabaseReport) error {
	return p.do(ctx, func(c *Client) error { return c.ReportDatabase(ctx, r) })
}

// RegionDatabase implements the agent's database read over the pool.
func (p *Pool) RegionDatabase(ctx context.Context, region string) (*fsm.RegionDatabase, error) {
	var out *fsm.RegionDatabase
	err := p.do(ctx, func(c *Client) error {
		var err error
		out, err = c.RegionDatabase(ctx, region, &QueryOptions{Consistency: "stale"})
		return err
	})
	return out, err
}
