package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// BackupPolicy reads a region's backup policy (the default one when none
// is stored).
func (c *Client) BackupPolicy(ctx context.Context, region string, q *QueryOptions) (*fsm.BackupPolicy, error) {
	var out fsm.BackupPolicy
	_, err := c.Do(ctx, http.MethodGet, "/v1/regions/"+url.PathEscape(region)+"/backup-policy", q.values(nil), nil, &out)
	return &out, err
}

// PutBackupPolicy stores a region's backup policy.
func (c *Client) PutBackupPolicy(ctx context.Context, p *fsm.BackupPolicy) (*fsm.BackupPolicy, error) {
	var out fsm.BackupPolicy
	_, err := c.Do(ctx, http.MethodPut, "/v1/regions/"+url.PathEscape(p.Region)+"/backup-policy", nil, p, &out)
	return &out, err
}

// RunBackup asks for a backup of region now (typ full or incr).
func (c *Client) RunBackup(ctx context.Context, region, typ string) (*fsm.Backup, error) {
	var out fsm.Backup
	_, err := c.Do(ctx, http.MethodPost, "/v1/regions/"+url.PathEscape(region)+"/backups", nil, &wire.BackupRunRequest{Type: typ}, &out)
	return &out, err
}

// Backups lists the catalog, the running backups and each region's
// backup health ("" region: every region).
func (c *Client) Backups(ctx context.Context, region string, q *QueryOptions) (*wire.BackupList, *Meta, error) {
	var out wire.BackupList
	v := url.Values{}
	if region != "" {
		v.Set("region", region)
	}
	m, err := c.Do(ctx, http.MethodGet, "/v1/backups", q.values(v), nil, &out)
	return &out, m, err
}

// Backup reads one backup: running (with progress) or in the catalog.
func (c *Client) Backup(ctx context.Context, id string, q *QueryOptions) (*wire.BackupStatus, *Meta, error) {
	var out wire.BackupStatus
	m, err := c.Do(ctx, http.MethodGet, "/v1/backups/"+url.PathEscape(id), q.values(nil), nil, &out)
	return &out, m, err
}

// RunDrill asks for a restore drill of region's newest verified backup.
func (c *Client) RunDrill(ctx context.Context, region string) (*fsm.Drill, error) {
	var out fsm.Drill
	_, err := c.Do(ctx, http.MethodPost, "/v1/regions/"+url.PathEscape(region)+"/drills", nil, nil, &out)
	return &out, err
}

// Drills lists a region's restore drills and the one running.
func (c *Client) Drills(ctx context.Context, region string, q *QueryOptions) (*wire.DrillList, *Meta, error) {
	var out wire.DrillList
	m, err := c.Do(ctx, http.MethodGet, "/v1/regions/"+url.PathEscape(region)+"/drills", q.values(nil), nil, &out)
	return &out, m, err
}
