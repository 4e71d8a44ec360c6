// Package agent is the region agent runtime: a Serf member of the
// federation that registers its signing key as a trust member, watches its
// task assignments with a blocking query, runs each task with the executor
// registered for its type, and reports statuses back in signed reports
// fenced by the task's generation (agent.go). It also reports its region's
// database endpoint (database.go).
//
// Executors are thin: the probe executor (executor_probe.go) lives here; the
// replication executors live in the replication package and satisfy
// Executor structurally, so that domain packages never import the agent.
// The agent reaches the servers only through the API interface (implemented
// by httpapi/client over HTTPS), and it shares nothing with the server
// package cluster but what every node shares (internal/node, fsm).
package agent
