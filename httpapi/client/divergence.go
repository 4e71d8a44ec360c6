package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/atomcloud/atomfed/httpapi/wire"
)

// Divergence returns the rows each old home of a tenant keeps in
// quarantine after a failover, as counts (GET /v1/tenants/{id}/divergence).
func (c *Client) Divergence(ctx context.Context, tenant string, q *QueryOptions) (*wire.DivergenceList, *Meta, error) {
	var out wire.DivergenceList
	m, err := c.Do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(tenant)+"/divergence", q.values(nil), nil, &out)
	return &out, m, err
}

// ResolveDivergence marks the rows region keeps in quarantine for a tenant
// as reconciled (DELETE /v1/tenants/{id}/divergence/{region}).
func (c *Client) ResolveDivergence(ctx context.Context, tenant, region, note string) (*wire.DivergenceEntry, error) {
	var out wire.DivergenceEntry
	var q url.Values
	if note != "" {
		q = url.Values{"note": {note}}
	}
	_, err := c.Do(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(tenant)+"/divergence/"+url.PathEscape(region), q, nil, &out)
	return &out, err
}
