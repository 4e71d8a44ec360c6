package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/atomcloud/atomfed/httpapi/wire"
)

// SetMaintenance turns a region's maintenance on or off (PUT
// /v1/regions/{name}/maintenance).
func (c *Client) SetMaintenance(ctx context.Context, region string, on bool, reason string) (*wire.RegionOpsStatus, error) {
	var out wire.RegionOpsStatus
	_, err := c.Do(ctx, http.MethodPut, "/v1/regions/"+url.PathEscape(region)+"/maintenance", nil, wire.MaintenanceRequest{Maintenance: &on, Reason: reason}, &out)
	return &out, err
}

// Maintenance reads a region's maintenance flag and its last drain.
func (c *Client) Maintenance(ctx context.Context, region string, q *QueryOptions) (*wire.RegionOpsStatus, *Meta, error) {
	var out wire.RegionOpsStatus
	m, err := c.Do(ctx, http.MethodGet, "/v1/regions/"+url.PathEscape(region)+"/maintenance", q.values(nil), nil, &out)
	return &out, m, err
}

// StartDrain starts the drain of a region (POST /v1/regions/{name}/drain).
func (c *Client) StartDrain(ctx context.Context, region string) (*wire.RegionOpsStatus, error) {
	var out wire.RegionOpsStatus
	_, err := c.Do(ctx, http.MethodPost, "/v1/regions/"+url.PathEscape(region)+"/drain", nil, nil, &out)
	return &out, err
}

// Drain reads a region's running or last drain, blocking with q.Index.
func (c *Client) Drain(ctx context.Context, region string, q *QueryOptions) (*wire.RegionOpsStatus, *Meta, error) {
	var out wire.RegionOpsStatus
	m, err := c.Do(ctx, http.MethodGet, "/v1/regions/"+url.PathEscape(region)+"/drain", q.values(nil), nil, &out)
	return &out, m, err
}

// StopDrain stops a region's running drain (DELETE
// /v1/regions/{name}/drain); the switchover running at that moment ends
// on its own.
func (c *Client) StopDrain(ctx context.Context, region, reason string) (*wire.RegionOpsStatus, error) {
	var out wire.RegionOpsStatus
	var q url.Values
	if reason != "" {
		q = url.Values{"reason": {reason}}
	}
	_, err := c.Do(ctx, http.MethodDelete, "/v1/regions/"+url.PathEscape(region)+"/drain", q, nil, &out)
	return &out, err
}
