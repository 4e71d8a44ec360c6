package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/atomcloud/atomfed/httpapi/wire"
)

// StartFailover asks for the failover of a tenant (POST
// /v1/tenants/{id}/failover): the answer holds the approval to vote on, or
// the failover started when the policy does not gate it.
func (c *Client) StartFailover(ctx context.Context, tenant string, req wire.FailoverRequest) (*wire.FailoverAnswer, error) {
	return c.failover(ctx, "/v1/tenants/"+url.PathEscape(tenant)+"/failover", req)
}

// StartRegionFailover asks for the failover of every tenant homed in
// region (POST /v1/regions/{name}/failover).
func (c *Client) StartRegionFailover(ctx context.Context, region string, req wire.FailoverRequest) (*wire.FailoverAnswer, error) {
	return c.failover(ctx, "/v1/regions/"+url.PathEscape(region)+"/failover", req)
}

func (c *Client) failover(ctx context.Context, path string, req wire.FailoverRequest) (*wire.FailoverAnswer, error) {
	var out wire.FailoverAnswer
	_, err := c.Do(ctx, http.MethodPost, path, nil, req, &out)
	return &out, err
}

// Failover reads what a failover of the tenant would do now and its last
// one (GET /v1/tenants/{id}/failover), blocking with q.Index.
func (c *Client) Failover(ctx context.Context, tenant string, q *QueryOptions) (*wire.FailoverView, *Meta, error) {
	var out wire.FailoverView
	m, err := c.Do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(tenant)+"/failover", q.values(nil), nil, &out)
	return &out, m, err
}

// Failovers lists the kept history of finished failovers (GET
// /v1/failovers).
func (c *Client) Failovers(ctx context.Context) (*wire.FailoverHistory, error) {
	var out wire.FailoverHistory
	_, err := c.Do(ctx, http.MethodGet, "/v1/failovers", nil, nil, &out)
	return &out, err
}
