package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// RunRebuild asks for a rebuild of region's PostgreSQL from its backups.
func (c *Client) RunRebuild(ctx context.Context, region string, req *wire.RebuildRunRequest) (*fsm.Rebuild, error) {
	var out fsm.Rebuild
	_, err := c.Do(ctx, http.MethodPost, "/v1/regions/"+url.PathEscape(region)+"/rebuild", nil, req, &out)
	return &out, err
}

// Rebuild reads region's newest rebuild: its phase and progress.
func (c *Client) Rebuild(ctx context.Context, region string, q *QueryOptions) (*wire.RebuildStatus, *Meta, error) {
	var out wire.RebuildStatus
	m, err := c.Do(ctx, http.MethodGet, "/v1/regions/"+url.PathEscape(region)+"/rebuild", q.values(nil), nil, &out)
	return &out, m, err
}
