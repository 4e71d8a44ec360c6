package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/atomcloud/atomfed/httpapi/wire"
)

// RouteRequest is what GET /v1/route is asked: the tenant, the operation
// (read or write), where from (a region, "lat,lon", or "" for the answering
// server's region) and the staleness budget of a read (nil: the server's
// default).
type RouteRequest struct {
	Tenant         string
	Op             string
	From           string
	MaxStalenessMS *int64
}

// Route asks where a tenant's request goes. With q.Index it blocks until
// the answer's inputs change (a blocking query).
func (c *Client) Route(ctx context.Context, r RouteRequest, q *QueryOptions) (*wire.Route, *Meta, error) {
	v := url.Values{"tenant": {r.Tenant}, "op": {r.Op}}
	if r.From != "" {
		v.Set("from", r.From)
	}
	if r.MaxStalenessMS != nil {
		v.Set("max_staleness_ms", strconv.FormatInt(*r.MaxStalenessMS, 10))
	}
	var out wire.Route
	m, err := c.Do(ctx, http.MethodGet, "/v1/route", q.values(v), nil, &out)
	return &out, m, err
}
