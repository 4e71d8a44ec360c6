package chaos

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// rlsReader is the role the RLS check reads mirror tables as: no
// superuser, no BYPASSRLS, SELECT only, as an application would.
const rlsReader = "chaos_reader"

// checksum is a count and digest of a tenant's rows of a table in a
// region, over the columns a mirror holds (not the PII column).
func (d *dataPlane) checksum(ctx context.Context, region int, table, tenant string) (string, error) {
	var sum string
	err := d.query(ctx, region, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT count(*)::text || ':' || coalesce(md5(string_agg(id || '|' || amount || '|' || note, ',' ORDER BY id)), '')
			FROM `+pgx.Identifier{table}.Sanitize()+` WHERE tenant_id = $1`, tenant).Scan(&sum)
	})
	return sum, err
}

// diverged says which tenant's table differs between its home and a
// mirror, or "" when every mirror holds exactly its home's rows.
func (d *dataPlane) diverged(ctx context.Context) string {
	for _, t := range d.cfg.Tenants {
		for _, tb := range t.Tables {
			home, err := d.checksum(ctx, t.Home, tb.Name, t.ID)
			if err != nil {
				return fmt.Sprintf("%s %s at home %s: %v", t.ID, tb.Name, d.regions[t.Home], err)
			}
			for _, m := range t.Mirrors {
				got, err := d.checksum(ctx, m, tb.Name, t.ID)
				if err != nil {
					return fmt.Sprintf("%s %s in mirror %s: %v", t.ID, tb.Name, d.regions[m], err)
				}
				if got != home {
					return fmt.Sprintf("%s %s: mirror %s has %s, home %s has %s", t.ID, tb.Name, d.regions[m],
						strings.SplitN(got, ":", 2)[0]+" rows", d.regions[t.Home], strings.SplitN(home, ":", 2)[0]+" rows")
				}
			}
		}
	}
	return ""
}

// converge waits until every mirror holds exactly its home's rows, for at
// most ConvergeWithin after from.
func (d *dataPlane) converge(ctx context.Context, from time.Time, res *DataPlaneResult) error {
	// Every 250 ms, the resolution of the convergence time it reports.
	var why string
	err := testutil.PollEvery(ctx, time.Until(from.Add(d.cfg.ConvergeWithin)), 250*time.Millisecond, func() error {
		if why = d.diverged(ctx); why != "" {
			return errors.New(why)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mirrors did not converge within %s of the end of the writes: %s", d.cfg.ConvergeWithin, why)
	}
	res.Converged = true
	res.ConvergenceS = time.Since(from).Seconds()
	d.cfg.Logf("every mirror holds its home's rows %s after the writes ended", secs(res.ConvergenceS))
	return nil
}

// rows reads a tenant's rows of a table in a region (without the PII
// column).
func (d *dataPlane) rows(ctx context.Context, region int, table, tenant string) (map[int64]dpVal, error) {
	out := map[int64]dpVal{}
	err := d.query(ctx, region, func(c *pgx.Conn) error {
		rs, err := c.Query(ctx, "SELECT id, amount, note FROM "+pgx.Identifier{table}.Sanitize()+" WHERE tenant_id = $1", tenant)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var id int64
			var v dpVal
			if err := rs.Scan(&id, &v.Amount, &v.Note); err != nil {
				return err
			}
			out[id] = v
		}
		return rs.Err()
	})
	return out, err
}

// check runs the checks after convergence (or after its bound passed).
func (d *dataPlane) check(ctx context.Context, models []map[dpKey]*dpRow, res *DataPlaneResult) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for i, w := range d.writers {
		d.checkRows(cctx, w.t, models[i], res)
	}
	d.checkLeaks(cctx, res)
	d.checkRLS(cctx, res)
	d.checkPII(cctx, res)
	d.checkHomeColumns(cctx, res)
	d.checkSlots(cctx, res)
	if res.LostRows > 0 {
		res.fail("%d acknowledged rows lost or changed (see findings)", res.LostRows)
	}
	if res.ExtraRows > 0 {
		res.fail("%d rows no write explains (see findings)", res.ExtraRows)
	}
	if res.LeakedRows > 0 {
		res.fail("%d rows of tenants in regions that are neither their home nor their mirror", res.LeakedRows)
	}
	if res.RLSVisible > 0 || res.RLSOff > 0 {
		res.fail("row-level security: %d rows of other tenants visible, %d mirror tables unprotected", res.RLSVisible, res.RLSOff)
	}
	if res.PIIFound > 0 {
		res.fail("%d PII columns or values on mirrors", res.PIIFound)
	}
	if res.HomeColumnsLost > 0 {
		res.fail("%d tenant tables lost their PII column at their home", res.HomeColumnsLost)
	}
	if res.OrphanSlots > 0 || res.MissingSubscriptions > 0 {
		res.fail("%d orphan replication slots or stray subscriptions, %d missing subscriptions or slots", res.OrphanSlots, res.MissingSubscriptions)
	}
}

// checkRows compares a tenant's rows at its home and on each mirror with
// what its writer was acknowledged: every acknowledged row present with
// its value, a row of unknown outcome in one of its possible states,
// nothing else.
func (d *dataPlane) checkRows(ctx context.Context, t DataPlaneTenant, model map[dpKey]*dpRow, res *DataPlaneResult) {
	for _, region := range append([]int{t.Home}, t.Mirrors...) {
		actual := map[string]map[int64]dpVal{}
		for _, tb := range t.Tables {
			rows, err := d.rows(ctx, region, tb.Name, t.ID)
			if err != nil {
				res.fail("read %s's %s in %s: %v", t.ID, tb.Name, d.regions[region], err)
				return
			}
			actual[tb.Name] = rows
		}
		lost, extra := 0, 0
		for _, k := range sortedKeysDP(model) {
			row := model[k]
			var got *dpVal
			if v, ok := actual[k.Table][k.ID]; ok {
				got = &v
			}
			if row.allows(got) {
				continue
			}
			present := false
			for _, p := range row.poss {
				present = present || p != nil
			}
			if present {
				lost++
				res.finding("%s: %s/%d of %s is %s, the writes allow only %s", d.regions[region], k.Table, k.ID, t.ID, valText(got), possText(row))
			} else {
				extra++
				res.finding("%s: %s/%d of %s is %s after an acknowledged delete", d.regions[region], k.Table, k.ID, t.ID, valText(got))
			}
		}
		for table, rows := range actual {
			for id, v := range rows {
				if _, ok := model[dpKey{table, id}]; !ok {
					extra++
					res.finding("%s: %s/%d of %s = %s was never written", d.regions[region], table, id, t.ID, valText(&v))
				}
			}
		}
		res.LostRows += lost
		res.ExtraRows += extra
	}
}

func valText(v *dpVal) string {
	if v == nil {
		return "absent"
	}
	return fmt.Sprintf("(%d, %s)", v.Amount, v.Note)
}

func possText(r *dpRow) string {
	parts := make([]string, len(r.poss))
	for i, p := range r.poss {
		parts[i] = valText(p)
	}
	return strings.Join(parts, " or ")
}

// tableNames lists every tenant table name.
func (d *dataPlane) tableNames() []string {
	set := map[string]bool{}
	for _, t := range d.cfg.Tenants {
		for _, tb := range t.Tables {
			set[tb.Name] = true
		}
	}
	return sortedKeys(set)
}

// allowed reports whether tenant's rows of table may be in region.
func (d *dataPlane) allowed(region int, table, tenant string) bool {
	if tenant == dpLocalTenant {
		return region == 0 && table == "orders"
	}
	for _, t := range d.cfg.Tenants {
		if t.ID == tenant && t.hasTable(table) {
			return t.Home == region || t.mirrors(region)
		}
	}
	return false
}

func (d *dataPlane) tableExists(ctx context.Context, region int, table string) (bool, error) {
	var ok bool
	err := d.query(ctx, region, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, "public."+table).Scan(&ok)
	})
	return ok, err
}

// checkLeaks looks in every region's tenant tables for rows of a tenant
// that is neither homed nor mirrored there.
func (d *dataPlane) checkLeaks(ctx context.Context, res *DataPlaneResult) {
	for region := range d.regions {
		for _, table := range d.tableNames() {
			ok, err := d.tableExists(ctx, region, table)
			if err != nil {
				res.fail("look for %s in %s: %v", table, d.regions[region], err)
				continue
			}
			if !ok {
				continue
			}
			counts := map[string]int{}
			err = d.query(ctx, region, func(c *pgx.Conn) error {
				rs, err := c.Query(ctx, "SELECT tenant_id, count(*) FROM "+pgx.Identifier{table}.Sanitize()+" GROUP BY tenant_id")
				if err != nil {
					return err
				}
				defer rs.Close()
				for rs.Next() {
					var id string
					var n int
					if err := rs.Scan(&id, &n); err != nil {
						return err
					}
					counts[id] = n
				}
				return rs.Err()
			})
			if err != nil {
				res.fail("count %s's tenants in %s: %v", table, d.regions[region], err)
				continue
			}
			for _, id := range sortedKeys(counts) {
				if !d.allowed(region, table, id) {
					res.LeakedRows += counts[id]
					res.finding("%s: %d rows of %s in %s, which is neither its home nor its mirror", d.regions[region], counts[id], id, table)
				}
			}
		}
	}
}

// mirrorTables lists, per region, the tables some tenant mirrors there.
func (d *dataPlane) mirrorTables() map[int][]string {
	out := map[int][]string{}
	for region := range d.regions {
		set := map[string]bool{}
		for _, t := range d.cfg.Tenants {
			if t.mirrors(region) {
				for _, tb := range t.Tables {
					set[tb.Name] = true
				}
			}
		}
		out[region] = sortedKeys(set)
	}
	return out
}

// checkRLS reads every mirror table as an application role, with
// app.tenant_id set to each tenant in turn (and to none): it must see no
// row of another tenant. The tables must have row-level security enabled
// and forced, with the tenant policy.
func (d *dataPlane) checkRLS(ctx context.Context, res *DataPlaneResult) {
	ids := []string{"", dpLocalTenant}
	for _, t := range d.cfg.Tenants {
		ids = append(ids, t.ID)
	}
	for region, tables := range d.mirrorTables() {
		for _, table := range tables {
			tbl := pgx.Identifier{table}.Sanitize()
			var enabled, forced bool
			var policies int
			err := d.query(ctx, region, func(c *pgx.Conn) error {
				if err := c.QueryRow(ctx, `SELECT relrowsecurity, relforcerowsecurity,
						(SELECT count(*) FROM pg_policy WHERE polrelid = pg_class.oid AND polname = $2)
					FROM pg_class WHERE oid = $1::regclass`, "public."+table, fsm.TenantPolicyName).Scan(&enabled, &forced, &policies); err != nil {
					return err
				}
				_, err := c.Exec(ctx, `DO $$ BEGIN CREATE ROLE `+rlsReader+` NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
				if err == nil {
					_, err = c.Exec(ctx, "GRANT SELECT ON "+tbl+" TO "+rlsReader)
				}
				return err
			})
			if err != nil {
				res.fail("row-level security of %s in %s: %v", table, d.regions[region], err)
				continue
			}
			if !enabled || !forced || policies != 1 {
				res.RLSOff++
				res.finding("%s: mirror table %s has row-level security enabled=%v forced=%v, tenant policy %d", d.regions[region], table, enabled, forced, policies)
			}
			for _, id := range ids {
				var other, seen int
				err := d.query(ctx, region, func(c *pgx.Conn) error {
					tx, err := c.Begin(ctx)
					if err != nil {
						return err
					}
					defer tx.Rollback(context.Background())
					if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+rlsReader); err != nil {
						return err
					}
					if id != "" {
						if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true)", id); err != nil {
							return err
						}
					}
					return tx.QueryRow(ctx, "SELECT count(*) FILTER (WHERE tenant_id IS DISTINCT FROM $1), count(*) FROM "+tbl, id).Scan(&other, &seen)
				})
				if err != nil {
					res.fail("read %s in %s as %s for tenant %q: %v", table, d.regions[region], rlsReader, id, err)
					continue
				}
				if other > 0 {
					res.RLSVisible += other
					who := "a session without app.tenant_id"
					if id != "" {
						who = "tenant " + id
					}
					res.finding("%s: %s sees %d rows of other tenants in %s", d.regions[region], who, other, table)
				}
			}
		}
	}
}

// checkPII looks for PII on the mirrors: a PII column on a table that is
// a mirror table only in its region (the subscriber creates it without),
// and a PII value (every one carries a marker) in any column of a row of
// a mirrored tenant.
func (d *dataPlane) checkPII(ctx context.Context, res *DataPlaneResult) {
	for region, tables := range d.mirrorTables() {
		for _, table := range tables {
			homeHere := false
			var piiCols []string
			for _, t := range d.cfg.Tenants {
				if !t.hasTable(table) {
					continue
				}
				piiCols = append(piiCols, t.pii(table))
				homeHere = homeHere || t.Home == region
			}
			if !homeHere {
				for _, col := range uniq(piiCols) {
					var n int
					err := d.query(ctx, region, func(c *pgx.Conn) error {
						return c.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns
							WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2`, table, col).Scan(&n)
					})
					if err != nil {
						res.fail("columns of %s in %s: %v", table, d.regions[region], err)
						continue
					}
					if n > 0 {
						res.PIIFound++
						res.finding("%s: PII column %s exists in mirror table %s", d.regions[region], col, table)
					}
				}
			}
			for _, t := range d.cfg.Tenants {
				if !t.mirrors(region) || !t.hasTable(table) {
					continue
				}
				var n int
				err := d.query(ctx, region, func(c *pgx.Conn) error {
					return c.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()+" AS r WHERE r.tenant_id = $1 AND strpos(r::text, $2) > 0",
						t.ID, piiMarker).Scan(&n)
				})
				if err != nil {
					res.fail("PII of %s in %s's %s: %v", t.ID, d.regions[region], table, err)
					continue
				}
				if n > 0 {
					res.PIIFound += n
					res.finding("%s: %d mirrored rows of %s in %s hold a PII value", d.regions[region], n, t.ID, table)
				}
			}
		}
	}
}

// checkHomeColumns checks that every tenant table at its home still has
// its PII column: the home's data is the tenant's, nothing of the
// replication may take it away.
func (d *dataPlane) checkHomeColumns(ctx context.Context, res *DataPlaneResult) {
	for _, t := range d.cfg.Tenants {
		for _, tb := range t.Tables {
			var n int
			err := d.query(ctx, t.Home, func(c *pgx.Conn) error {
				return c.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns
					WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2`, tb.Name, tb.PII).Scan(&n)
			})
			if err != nil {
				res.fail("columns of %s in %s: %v", tb.Name, d.regions[t.Home], err)
				continue
			}
			if n == 0 {
				res.HomeColumnsLost++
				res.finding("%s: %s's home table %s has lost its column %s", d.regions[t.Home], t.ID, tb.Name, tb.PII)
			}
		}
	}
}

func uniq(list []string) []string {
	set := map[string]bool{}
	for _, s := range list {
		set[s] = true
	}
	return sortedKeys(set)
}

// checkSlots compares the homes' replication slots with the mirrors'
// subscriptions: every mirror of a tenant has its subscription, using a
// slot of the same name at the home; no slot and no subscription is left
// over. Teardown is asynchronous, so this is polled for up to 30 s.
func (d *dataPlane) checkSlots(ctx context.Context, res *DataPlaneResult) {
	var orphans, missing int
	var findings []string
	var stateErr error
	err := testutil.PollEvery(ctx, 30*time.Second, 500*time.Millisecond, func() error {
		orphans, missing, findings, stateErr = d.slotState(ctx)
		if stateErr == nil && (orphans != 0 || missing != 0) {
			return fmt.Errorf("%d orphan slots, %d missing subscriptions", orphans, missing)
		}
		return stateErr
	})
	switch {
	case err == nil:
	case stateErr != nil:
		res.fail("replication slots and subscriptions: %v", stateErr)
	default:
		res.OrphanSlots, res.MissingSubscriptions = orphans, missing
		for _, f := range findings {
			res.finding("%s", f)
		}
	}
}

func (d *dataPlane) slotState(ctx context.Context) (orphans, missing int, findings []string, err error) {
	wantSlots := map[int]map[string]bool{}
	wantSubs := map[int]map[string]bool{}
	for region := range d.regions {
		wantSlots[region], wantSubs[region] = map[string]bool{}, map[string]bool{}
	}
	for _, t := range d.cfg.Tenants {
		for i, m := range t.Mirrors {
			name := fsm.TenantSubscription(t.ID, t.MirrorRegions[i])
			wantSlots[t.Home][name] = true
			wantSubs[m][name] = true
		}
	}
	for region := range d.regions {
		slots := map[string]bool{}
		subs := map[string]string{}
		err := d.query(ctx, region, func(c *pgx.Conn) error {
			rs, err := c.Query(ctx, `SELECT slot_name::text, active FROM pg_replication_slots`)
			if err != nil {
				return err
			}
			for rs.Next() {
				var name string
				var active bool
				if err := rs.Scan(&name, &active); err != nil {
					rs.Close()
					return err
				}
				slots[name] = active
			}
			rs.Close()
			if err := rs.Err(); err != nil {
				return err
			}
			rs, err = c.Query(ctx, `SELECT subname::text, coalesce(subslotname::text, '') FROM pg_subscription`)
			if err != nil {
				return err
			}
			defer rs.Close()
			for rs.Next() {
				var name, slot string
				if err := rs.Scan(&name, &slot); err != nil {
					return err
				}
				subs[name] = slot
			}
			return rs.Err()
		})
		if err != nil {
			return 0, 0, nil, fmt.Errorf("%s: %w", d.regions[region], err)
		}
		r := d.regions[region]
		for _, name := range sortedKeys(slots) {
			if !wantSlots[region][name] {
				orphans++
				findings = append(findings, fmt.Sprintf("%s: replication slot %s (active %v) belongs to no mirror's subscription", r, name, slots[name]))
			}
		}
		for _, name := range sortedKeys(wantSlots[region]) {
			if _, ok := slots[name]; !ok {
				missing++
				findings = append(findings, fmt.Sprintf("%s: the slot %s of a mirror's subscription is missing", r, name))
			}
		}
		for _, name := range sortedKeys(subs) {
			if !wantSubs[region][name] {
				orphans++
				findings = append(findings, fmt.Sprintf("%s: subscription %s belongs to no tenant mirrored here", r, name))
			}
		}
		for _, name := range sortedKeys(wantSubs[region]) {
			slot, ok := subs[name]
			switch {
			case !ok:
				missing++
				findings = append(findings, fmt.Sprintf("%s: subscription %s is missing", r, name))
			case slot != name:
				missing++
				findings = append(findings, fmt.Sprintf("%s: subscription %s uses slot %q", r, name, slot))
			}
		}
	}
	sort.Strings(findings)
	return orphans, missing, findings, nil
}
