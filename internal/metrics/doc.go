// Package metrics is the metrics aggregator (G.1.5): one global Prometheus
// view of every region that answers within a deadline and names what is
// missing.
//
// Where the data travels. In each region one agent holds the region's
// metrics task (placed by the leader like every task, moved to a peer when
// the agent fails, fenced by its generation). Every interval it scrapes the
// region's Prometheus through /federate with the configured match[]
// selectors (when PROM_URL is set) and the /metrics of the region's atomfed
// nodes, labels every series with its region (keeping the labels it already
// has, as honor_labels does), adds the scrape's own health series, and
// pushes the result as one gzip-compressed snapshot (Prometheus' delimited
// protobuf, families sorted by name) to every server, authenticated with
// its agent token. A server accepts a snapshot only from the agent that
// holds the region's task at its current generation, only for that agent's
// own region, and only when every series carries that region; it keeps the
// newest snapshot per region in memory, compressed, within Limits. Nothing
// of it goes through Raft, and nothing of it survives a restart: the next
// push refills it.
//
// Why a push: a server answers GET /v1/metrics/federate from what it holds,
// so a slow, partitioned or dead region costs the answer nothing (no fan-out
// waits on it, unlike Thanos' store fan-out); the region is named missing
// once its snapshot is older than max_age. The deadline (timeout) bounds
// the merge itself: regions whose series were not all written in time are
// named in a trailer and in atomfed_region_scrape_up.
//
// Memory. A server keeps at most Limits.MaxCompressedBytes per region (the
// compressed snapshot; about 11 bytes per series in BenchmarkFederate). A
// federate answer streams: it decodes one metric family per region at a
// time, merges them and writes them, so its memory is bounded by the
// largest family of each region (about 1 KiB per series of it, decoded),
// not by the total: about 80 bytes per series in all when families hold
// 500 series (BenchmarkFederate).
//
// Why here: the package is shared by the agent's executor (wired in
// cmd/atomfed) and the servers' HTTP API, and httpapi imports only fsm and
// internal packages; it is a production leaf that knows nothing of Raft,
// Serf or HTTP routing. It uses Prometheus' own libraries for the formats
// (prometheus/common/expfmt) and for match[] (prometheus/promql/parser, the
// parser Prometheus' /federate uses).
package metrics
