package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/atomcloud/atomfed/httpapi/wire"
)

// StartSwitchover starts the planned switchover of a tenant's home onto
// one of its mirrors (POST /v1/tenants/{id}/switchover).
func (c *Client) StartSwitchover(ctx context.Context, tenant string, req wire.SwitchoverRequest) (*wire.SwitchoverStatus, error) {
	var out wire.SwitchoverStatus
	_, err := c.Do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(tenant)+"/switchover", nil, req, &out)
	return &out, err
}

// Switchover reads a tenant's running or last switchover, blocking with
// q.Index.
func (c *Client) Switchover(ctx context.Context, tenant string, q *QueryOptions) (*wire.SwitchoverStatus, *Meta, error) {
	var out wire.SwitchoverStatus
	m, err := c.Do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(tenant)+"/switchover", q.values(nil), nil, &out)
	return &out, m, err
}

// AbortSwitchover rolls back a tenant's switchover that has not started
// its promotion (DELETE /v1/tenants/{id}/switchover).
func (c *Client) AbortSwitchover(ctx context.Context, tenant, reason string) (*wire.SwitchoverStatus, error) {
	var out wire.SwitchoverStatus
	var q url.Values
	if reason != "" {
		q = url.Values{"reason": {reason}}
	}
	_, err := c.Do(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(tenant)+"/switchover", q, nil, &out)
	return &out, err
}
