// Package replication is the data plane of the federation: it drives
// PostgreSQL's own logical replication from the federation's state. atomfed
// never copies a row itself.
//
// Each agent runs the executors of this package next to its region's
// PostgreSQL (its POSTGRES_DSN). The leader derives the tasks from the
// state (cluster/scheduler_replication.go):
//
//   - tenant-publisher, on a tenant's home: validates the tenant's tables
//     (tenant_id is text and part of a unique key usable as replica
//     identity, no PII column in that key), sets the replica identity, and
//     keeps one publication per tenant with the row filter
//     tenant_id = '<id>' and a column list without the PII columns. It
//     limits the replication role to what is published (grants.go): SELECT
//     on the published columns only, and a row-level security policy per
//     tenant publication. It drops slots of the tenant that no mirror
//     holds any more.
//   - tenant-subscriber, on each mirror: creates missing tables without PII
//     columns, enables row-level security with the tenant policy (P5), keeps
//     the subscription, drops newly marked PII columns once the publication
//     no longer carries them, and reports lag, errors and schema drift.
//   - sync-standby, on the home of sync tenants: owns the home cluster's
//     synchronous_standby_names (a quorum, ANY 1 of the mirrors) and
//     degrades a tenant to async when every mirror is down, if its policy
//     allows it, within its bound.
//   - global-publisher and global-subscriber: the same for global tables,
//     whole tables from a writer region to every region.
//
// The database steps of a switchover or failover start here: FenceTenant
// (fence.go) refuses a tenant's writes in one region's database, leaving
// reads and logical replication apply alone, and returns the fenced LSN;
// UnfenceTenant reverses it. WaitCaughtUp (catchup.go) waits at a mirror
// until its subscription has applied up to that LSN; PromoteMirror
// (promote.go) then makes the mirror a writable home copy of the tenant,
// and DropHomeSlot drops the old home's slot. After the switchover the old
// home mirrors the new one as a former home (former_home.go):
// CreateFormerHomeSlot at the new home before it takes writes, then
// SubscribeFormerHome (or a tenant-subscriber with the spec's
// former_home), which copies nothing and keeps the old home's rows and
// PII; QuarantineDivergence (quarantine.go) first copies the rows the new
// home lacks or holds otherwise aside for a person. The executors of a
// switchover's steps (switchover_exec.go: tenant-fence, tenant-catchup,
// tenant-promote, tenant-detach) drive them, and a tenant-subscriber in
// hand-off mode makes every other mirror follow the new home without a
// copy; a hand-off record in each database keeps a subscriber of the
// ended placement from undoing a promotion or detach (handoff_guard.go).
// After an unplanned failover the old home's tenant-subscriber with the
// spec's resync (resync.go) fences the tenant there first, then, at one
// consistent point of the new home (a slot made with an exported
// snapshot), quarantines its divergent rows and makes its rows equal the
// new home's in one transaction, and subscribes from that slot.
//
// A task whose object is gone is kept with ensure "absent" until its
// executor has torn everything down, so deleting a tenant or removing a
// mirror leaves no publication, subscription or slot behind.
//
// Credentials never cross Raft. The FSM holds only host, port and database
// of each region. An agent holds its own region's DSN (superuser, or owner
// of the tables with REPLICATION and ALTER SYSTEM on
// synchronous_standby_names), and a pgpass file with the password of the
// replication role (default atomfed_replicator, the same name in every
// region). A subscription's connection string names that passfile instead
// of a password ("passfile=/etc/atomfed/replication.pgpass"), so the
// mirror's PostgreSQL server reads the password from the file, which must
// be readable by the server's OS user; the agent reads the same file to
// inspect the publisher (its schema, slot and lag). Both connections use
// TLS with sslmode=verify-full against the replication CA.
//
// A source region's database is another trust domain: what a mirror reads
// there (column names, types, keys) is data, never SQL. Names are quoted
// identifiers and types are resolved in the mirror's own catalog
// (types.go).
package replication
