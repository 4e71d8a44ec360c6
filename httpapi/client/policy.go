package client

import (
	"context"
	"net/http"

	"github.com/atomcloud/atomfed/internal/structs"
)

// PolicyStatus reads P1-P7 as the addressed server evaluates them.
func (c *Client) PolicyStatus(ctx context.Context) (*structs.PolicyStatus, error) {
	var out structs.PolicyStatus
	_, err := c.Do(ctx, http.MethodGet, "/v1/policy/status", nil, nil, &out)
	return &out, err
}
