package report

// Module is the import path prefix of atomfed's packages.
const Module = "github.com/atomcloud/atomfed"

// How far a component is built.
const (
	Built        = "built"
	PartlyBuilt  = "partly_built"
	NotBuilt     = "not_built"
	verdictPass  = "pass"
	verdictFail  = "fail"
	verdictNoRun = "unverified"
	// VerdictNotImplemented is the verdict of a component that is not
	// built: never a pass.
	VerdictNotImplemented = "not_implemented"
	// VerdictPartial is the verdict of a partly built component: never a
	// pass either.
	VerdictPartial = "partial"
	// VerdictPassSimulated is the verdict of a component whose tests
	// passed and whose live verification succeeded while a part it
	// depends on ran simulated (the verification names it): never a pass.
	VerdictPassSimulated = "pass_simulated"
)

// Component is one task of phase G.1 and what of it exists. When a
// component lands, its entry here is updated in the same change: Built,
// its packages, what exists, and the status call that verifies it live.
type Component struct {
	Task  string `json:"task"`
	Short string `json:"short"`
	Name  string `json:"name"`
	// Built is built, partly_built or not_built.
	Built string `json:"built"`
	// Packages are the component's packages (relative to Module); their
	// tests make its test summary. Only packages that exist are named
	// (TestComponentPackagesExist): a component not built has none.
	Packages []string `json:"packages"`
	// Exists and Missing say, in words, what is and is not there.
	Exists  []string `json:"exists"`
	Missing []string `json:"missing"`
	// Verify names the live verification (see verify.go); "" for none,
	// which only a component that is not fully built may have.
	Verify string `json:"verify"`
	// Related names tests elsewhere ("package.TestName") whose results
	// are evidence about the component without being its own.
	Related []string `json:"related,omitempty"`
}

// File is the component's report file name.
func (c Component) File() string { return c.Task + "_" + c.Short + ".md" }

// Components lists G.1.1-G.1.7 as the code stands.
func Components() []Component {
	return []Component{
		{Task: "G.1.1", Short: "registry", Name: "Region Registry", Built: Built,
			Packages: []string{"fsm", "cluster", "httpapi", "httpapi/client", "internal/e2e"},
			Exists: []string{
				"regions and tenants in the Raft FSM with create/modify indexes, CAS writes and an audit hash chain",
				"seed paths POST /region/register and GET /region/list, /v1 API with linearizable, default and stale reads and blocking queries",
				"writes forwarded from followers to the leader; region health from agents and probes",
				"snapshots on demand (GET/PUT /v1/snapshot)",
				"signed region registration (P2) and approvals for production regions (P3), from G.1.7",
			},
			Verify: "registry"},
		{Task: "G.1.2", Short: "federation_sync", Name: "Federation Sync", Built: Built,
			Packages: []string{"replication", "internal/pglocal"},
			Exists: []string{
				"global tables in the FSM (commands 32/33): written in one region, replicated to every other by PostgreSQL logical replication driven by the agents",
				"region database endpoints reported by each region's agent, signed with its key (command 30)",
				"schema digests per region, drift reported within one probe interval (GET /v1/global-tables/{name}, /global-status)",
				"replication lag and errors in the API and in metrics (atomfed_global_sync_lag_*)",
			},
			Verify: "federation_sync"},
		{Task: "G.1.3", Short: "edge_controller", Name: "Edge Controller", Built: Built,
			Packages: []string{"routing", "edge"},
			Exists: []string{
				"GET /v1/route on every server, from local state with blocking-query freshness: writes to the tenant's home, reads to the nearest mirror within the staleness budget, with alternatives; writes answered 503 with Retry-After while a switchover holds them",
				"atomfed edge: a reverse proxy routed by the watched routing table, retrying idempotent reads only, with the table published to Redis when REDIS_URL is set",
				"tenant placement epochs; planned switchover of a tenant to a mirror with no acknowledged write lost (fence, catch-up, promotion, hand-off slots, commit of the new home and epoch in one entry), resumable across leader and agent crashes, rolled back before the promotion; fail-back as a switchover back; atomfed tenant switchover",
				"unplanned failover of a tenant or of every tenant of a lost region (POST /v1/tenants/{id}/failover, /v1/regions/{name}/failover, atomfed tenant|region failover): m-of-n approved under the P3 failover rule, the approval showing the target's last reported lag, the data at risk and the drill precondition; the rows lost are exactly those the old home committed after the applied LSN the failover records; sync tenants go to their most advanced mirror and lose no acknowledged commit",
				"automatic failover policy per tenant (mode auto, rpo_budget_ms), decided by the quorum's leader after a detection window, only onto a mirror within the budget whose region passed a restore drill; why it waits in the API and metrics",
				"a bounded history of finished failovers (GET /v1/failovers: RTO, RPO) that P7's failover tests read",
				"make bench-dataplane times planned switchovers and automatic failovers under writes through atomfed edge (to the first write at the new home); make chaos has a region-loss run with the automatic policy (RPO account against the old home's quarantine, one writable home, PII in its region)",
				"the old home back after an unplanned failover: fenced first, its divergent rows quarantined in its own database and its rows reconciled with the new home at the consistent point of the slot it then subscribes from (PII kept); counts and keys recorded by the leader (command 67), audited, in GET /v1/tenants/{id}/divergence, atomfed tenant divergence and atomfed_tenant_divergent_rows, marked reconciled by an operator",
				"residency region per tenant kept through switchovers; a temporary home's PII columns accept only NULL (pii_while_away null_only, enforced by the database with a P1 error), or keep_local as an audited residency exception listed in P1's evidence",
				"region maintenance (no new placements) and region drain: every tenant homed in the region switched onto its best mirror one by one by the leader, with progress (atomfed region maintenance|drain, /v1/regions/{name}/drain)",
				"the home guard: a home takes a replicated tenant's writes only once its agent confirmed, since PostgreSQL last started, that it is still the home (WF002), so a lost home whose PostgreSQL comes back before its agent is never a second writable home (the make chaos region-loss run checks it)",
				"a failover's promotion moves the tenant's sequences 1,000,000 steps past the highest value, clear of the keys the lost home may have handed out",
			},
			Verify: "edge",
			Related: []string{"internal/e2e.TestSwitchover", "internal/e2e.TestUnplannedFailover", "internal/e2e.TestRegionDrain",
				"replication.TestOldHomeComesBackAfterAFailover", "replication.TestHomeGuardHoldsWritesAfterARestartUntilConfirmed",
				"replication.TestPIIGuardAtATemporaryHome", "replication.TestSwitchoverStepsMoveATenantUnderWrites"}},
		{Task: "G.1.4", Short: "tenant_replicator", Name: "Tenant Replicator", Built: Built,
			Packages: []string{"replication"},
			Exists: []string{
				"per-tenant publications (row filter on tenant_id, PII columns left out) and subscriptions in every mirror, set up and torn down by the agents",
				"row-level security with the tenant policy on every mirror table, restored when lost",
				"synchronous replication per tenant with a bounded, audited degrade (command 31)",
				"GET /v1/tenants/{id}/replication: per-mirror state, lag and last error",
				"P1 and P5 in GET /v1/policy/status, from what the publishers and subscribers read from PostgreSQL",
			},
			Verify: "tenant_replication"},
		{Task: "G.1.5", Short: "metrics_aggregator", Name: "Metrics Aggregator", Built: Built,
			Packages: []string{"internal/metrics", "cluster/agent"},
			Exists: []string{
				"every node serves its own /metrics and /global-status (P4)",
				"a metrics task per region: an agent of the region scrapes the region's Prometheus (/federate, PROM_URL) and its atomfed nodes, labels every series with its region, and pushes compressed snapshots to every server (memory only, never Raft), fenced by the task's generation",
				"GET /v1/metrics/federate on every server: Prometheus' match[] and formats, every region merged within a deadline, missing regions named (header, atomfed_region_scrape_up/age); GET /v1/metrics/regions; atomfed metrics regions|federate",
				"a per-region summary in /global-status (scrape, request and 5xx rates, mirrors' replication lag p99, age of the newest verified backup, what is stale)",
				"alert rules and a Grafana dashboard in deploy/, checked by promtool and against the view; one Prometheus per region in make run (atomfed dev --prometheus)",
				"remote write of the view to a global Prometheus or Mimir (--remote-write-url)",
			},
			Verify:  "metrics",
			Related: []string{"internal/e2e.TestMetricsGlobalView", "internal/e2e.TestDevPrometheusPerRegion", "httpapi.TestMetricsFederate"}},
		{Task: "G.1.6", Short: "dr_coordinator", Name: "Disaster Recovery Coordinator", Built: Built,
			Packages: []string{"recovery"},
			Exists: []string{
				"backups of every region's PostgreSQL with pgBackRest, run by one agent of the region (moved to a peer when it fails, fenced by generation): archive_command, stanza, full and incremental backups with progress, pgbackrest verify after each",
				"a backup policy per region in the FSM (schedule, retention, staleness, drill interval; a default for every region), a catalog of backups with label, sizes, WAL range and verification (commands 70-74)",
				"repositories on a file system path or S3 (S3_ENDPOINT; credentials from the environment or a file, never in the FSM or logs), optionally encrypted",
				"restore drills: the newest verified backup restored to a named point in a throwaway PostgreSQL and compared table by table with the source",
				"GET /v1/backups, backup policy and drills in the API; atomfed backup list|run|status|policy|drill|drills",
				"rebuild of a lost region (atomfed dr rebuild, POST/GET /v1/regions/{name}/rebuild, commands 77-78): an agent that manages the region's PostgreSQL (--pg-data) restores the newest verified backup onto its empty data directory, replays the archived WAL to its end or to --to-time (point-in-time recovery), starts it and points archiving at itself; phase, bytes, files and ETA live in the API and the CLI; mirrors whose slot the rebuild lost re-sync (purge and copy) from the rebuilt home",
				"control-plane snapshots: the leader ships the state archive to a directory (--snapshot-repo) or S3 on the snapshot policy's schedule with retention (commands 75-76), failures recorded with their error; atomfed snapshot list|ship|policy, snapshot restore --from-repo latest|ID (digest checked, approval-gated like a manual restore)",
				"atomfed dr status and GET /v1/dr/status: each region's last verified backup and passed drill against their bounds and the last shipped snapshot against its schedule, exit 2 when stale; server metrics of the last success of each",
				"P7 from the backup and drill catalogs, the shipped-snapshot catalog and the failover history: passes only when every region with a database has a verified backup within its bound and a drill passed within its window, the control-plane snapshot is shipped on schedule and a failover ran within 30 days; blocks naming each region and what it misses",
				"a restore drill passed within the window is a precondition of an automatic failover onto a region and is shown on every failover approval",
				"make bench-dataplane: a 2 GB region backed up and restored by atomfed against the same pgBackRest commands by hand, and rebuilt; make chaos runs backups and drills during the faults and rechecks every verdict after healing",
			},
			Verify: "backups",
			Related: []string{"cluster.TestSnapshotSaveRestore", "cluster.TestLeaderCrash", "cluster.TestLeaderLeave",
				"cluster.TestFailedAgentTasksMoveToPeer", "internal/e2e.TestKillLeaderUnderWrites",
				"internal/e2e.TestPausedLeaderIsReplaced", "internal/e2e.TestSIGTERMLeavesGracefully", "internal/e2e.TestBackupsEndToEnd",
				"internal/e2e.TestRebuildALostRegion", "recovery.TestRebuildToTheEndOfTheArchive", "recovery.TestRebuildToAPointInTime",
				"internal/e2e.TestShippedSnapshots", "cluster.TestSnapshotShippingToS3", "httpapi/policy.TestP7NamesWhatIsMissing"}},
		{Task: "G.1.7", Short: "policy_manager", Name: "Federation Policy Manager", Built: Built,
			Packages: []string{"internal/signing", "internal/tlsutil", "httpapi/policy", "internal/precheck", "internal/report"},
			Exists: []string{
				"cosign-format ECDSA P-256 keys and sign-blob compatible signatures (internal/signing, atomfed keygen)",
				"signed requests verified by every server (P2): registrations, agent reports, approvals, key rotation; timestamp skew and nonce replay checks",
				"trust members and keys in the FSM, rotation with an overlap window, revocation, a signed trust bundle",
				"m-of-n approvals applied in the entry of the m-th approval, with preconditions re-checked (P3)",
				"ACL tokens with roles (operator, approver, agent, reader), stored hashed",
				"TLS on the API and forwarding, mutual TLS on Raft, encrypted gossip",
				"GET /v1/policy/status: P1-P7 with evidence (P1 and P5 from the replication executors' reports of G.1.4)",
				"atomfed precheck and SIMULATION_MODE on servers and agents",
			},
			Verify: "policy"},
	}
}
