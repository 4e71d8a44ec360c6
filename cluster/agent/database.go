package agent

import (
	"context"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// databaseCheckInterval is how often an agent checks that the federation
// still records its region's database endpoint as it knows it.
const databaseCheckInterval = time.Minute

// databaseLoop reports the region's database endpoint until the
// federation records it, then checks it every databaseCheckInterval and
// reports again when the record differs (another agent of the region was
// configured differently, or a snapshot restore took it away). Reads go
// first so that an unchanged endpoint costs no Raft entry.
func (a *Agent) databaseLoop() {
	// The report is signed with the agent's key: wait until it is trusted.
	select {
	case <-a.ctx.Done():
		return
	case <-a.registered:
	}
	want := *a.cfg.Database
	backoff := 200 * time.Millisecond
	for {
		wait := databaseCheckInterval
		ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
		cur, err := a.api.RegionDatabase(ctx, a.cfg.Region)
		if err != nil || cur == nil || cur.Endpoint != want {
			err = a.api.ReportDatabase(ctx, &fsm.RegionDatabaseReport{Region: a.cfg.Region, Endpoint: want, Node: a.cfg.NodeID})
			if err != nil {
				a.log.Debug("database endpoint not reported yet; retrying", "error", err)
				wait = backoff
				if backoff < 5*time.Second {
					backoff *= 2
				}
			} else {
				a.log.Info("reported the region's database endpoint", "host", want.Host, "port", want.Port, "database", want.Database)
				backoff = 200 * time.Millisecond
			}
		}
		cancel()
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
