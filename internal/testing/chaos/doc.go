// Package chaos is the failover suite: it runs real atomfed servers and
// agents behind userspace fault proxies, injects faults (nemeses) chosen
// from a printed seed while clients run a recorded workload, heals, and
// checks what the clients saw. It is test-only: `make test` runs a short
// run and a short data-plane run with fixed seeds and schedules
// (chaos_test.go, dataplane_test.go), `make chaos` runs the long suite
// (cmd/atomfed-chaos) and writes reports/chaos.md. It is the top of the
// chain of harnesses: its servers and agents are started by procs (the
// same code as internal/e2e's and the bench tool's clusters), which it
// hands a hook that places each server behind its proxies; what it adds is
// the fault network, the tmpfs data dir, the nemeses, the workload and the
// checks. Its report's machine facts come from machine, shared with the
// bench tool.
//
// The pieces:
//
//   - network.go: the fault network. Every node binds its own loopback
//     address (127.b.0.x) and advertises a proxy (127.b.1.x) for its
//     Raft, Serf (TCP and UDP) and HTTP ports. Nodes send from their own
//     address (cluster binds outgoing connections to the bind address), so
//     a proxy knows the sender and applies the fault of the directed link:
//     pass, delay with jitter, drop (fast reset) or blackhole (held until
//     healed). Standing conditions (80 ms between continents) sit under
//     injected faults. addr.go: the address plan (bind, proxy and client
//     subnets of a cluster's 127.b.0.0/16 block).
//   - cluster.go: starts the servers through procs.NewCluster with the
//     default security (HTTPS and Raft mutual TLS with a throwaway CA,
//     encrypted gossip, the bootstrap token, signed region registration),
//     its Configure hook binding each server to its own address behind its
//     proxy and mounting a tmpfs data dir for the disk-full nemesis; starts
//     agents the same way (procs.NewAgentProcWith); closes a proxy's ports
//     while its server is down (clients then see a refused connection: a
//     write that certainly did not happen), and tells when the cluster is
//     whole.
//   - nemesis.go: kill -9, pause, partitions (minority, leader,
//     asymmetric), latency, rolling restart, member replacement, disk
//     full; alone or a network fault mixed with a process fault.
//   - workload.go: linearizable reads, read-then-CAS writes and plain
//     writes on a few tenant keys with unique values, and create-only
//     writes of fresh tenants; started at a fixed rate on random servers
//     with many in flight, recorded with call and return times.
//   - model.go, history.go: the porcupine model (a versioned register per
//     key) and the checks: per-key linearizability with an HTML picture of
//     any violation, durability of acknowledged writes, availability
//     windows per fault.
//   - run.go, suite.go, report.go: one run (fresh cluster, warm-up, faults,
//     healing, final writes, equal audit heads, checks) and the long suite
//     of four runs and a data-plane run, with its report.
//   - dataplane.go, dpworkload.go, dpcheck.go: the data-plane run. Three
//     servers as above, and per region a real PostgreSQL 15
//     (internal/pglocal) and a real agent with that database; tenants with
//     tables and PII columns registered through the API, so the agents run
//     logical replication (publication with row filter and column list at
//     the home, subscription with row-level security on each mirror).
//     One writer per tenant inserts, updates and deletes rows at its home
//     and records what PostgreSQL acknowledged (an error after sending is
//     a maybe). Nemeses: kill -9 of a region's PostgreSQL (every region is
//     a home and a mirror) and its restart, kill -9 of an agent, of the
//     leader, and mixes. After healing: every mirror holds exactly its
//     home's rows within a bound, every acknowledged row is there with its
//     value and nothing unexplained is; no row of a tenant outside its home
//     and mirrors, none visible to another tenant under RLS, no PII on a
//     mirror, no orphan slot. The replicator's chaosbug switches (no row
//     filter, no RLS) show the checks turn red.
package chaos
