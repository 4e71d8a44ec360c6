# atomfed — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/atomfed
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PKGS := ./...

.PHONY: all build run test test-short test-deploy lint bench bench-dataplane bench-go bench-compare chaos chaos-dataplane fuzz reports image clean

all: build

## build: compile the atomfed binary into bin/
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/atomfed

## run: start a whole local federation (3 servers, 3 regions; API on 127.0.0.1:8401)
run: build
	./$(BIN) dev --prometheus

## lint: gofmt check and go vet
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

## test: lint, then every test with the race detector (unit, FSM, in-process
## clusters, multi-process clusters of the real binary, PostgreSQL); the
## short chaos runs (internal/testing/chaos) come last and alone, so that their
## loaded clusters do not share the two cores with the multi-process tests
## that assert time bounds
CHAOS_PKG := github.com/atomcloud/atomfed/internal/testing/chaos
test: lint
	$(GO) test -race -count=1 -timeout 25m $$($(GO) list $(PKGS) | grep -vx '$(CHAOS_PKG)')
	$(MAKE) test-deploy
	$(GO) test -race -count=1 -timeout 15m $(CHAOS_PKG)

## test-deploy: the deploy/ module (its own go.mod, so that Helm and the
## Kubernetes API types stay out of atomfed's dependencies): the Helm chart
## rendered, linted and decoded, the image tarball, the systemd units and a
## federation started from them
test-deploy:
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...

## image: the atomfed container image as an OCI archive, bin/atomfed-image.tar
## (static binary, non-root, no shell, empty base), built without Docker;
## named $(IMAGE):$(IMAGE_TAG), the Helm chart's default image
IMAGE ?= ghcr.io/atomcloud/atomfed
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' deploy/helm/atomfed/Chart.yaml)
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/image/atomfed ./cmd/atomfed
	cd deploy && $(GO) run ./cmd/atomfed-image -binary ../bin/image/atomfed -ref $(IMAGE):$(IMAGE_TAG) \
	  -version $(VERSION) -revision $(COMMIT) -out ../bin/atomfed-image.tar

## test-short: the same without the race detector, for a quick loop
test-short:
	$(GO) test -count=1 -timeout 15m $(PKGS)

## fuzz: run every fuzz target for FUZZTIME each (default 30s)
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: 3 server processes on loopback with fsync on; writes reports/bench.md;
## then the global metrics view's merge of 3 regions x 50,000 series and its
## memory per series (reports/bench-metrics.txt); then bench-dataplane
bench: build
	$(GO) run ./cmd/atomfed-bench -bin $(BIN) -out reports/bench.md
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 5x ./internal/metrics | tee reports/bench-metrics.txt
	$(MAKE) bench-dataplane

## bench-dataplane: a federation with a PostgreSQL, an agent and an
## application per region (3) behind `atomfed edge`: planned switchovers
## under writes through the edge (DP_SWITCHOVER_ROUNDS, alternating
## direction), unplanned failovers with the automatic policy
## (DP_FAILOVER_ROUNDS, home killed), then a region database filled to
## DP_BACKUP_MB MiB backed up and restored by atomfed and by hand with
## pgBackRest (DP_BACKUP_ROUNDS, odd), and that region lost and rebuilt
## with atomfed dr rebuild; writes its section of reports/bench.md
DP_SWITCHOVER_ROUNDS ?= 5
DP_FAILOVER_ROUNDS ?= 5
DP_BACKUP_MB ?= 2048
DP_BACKUP_ROUNDS ?= 3
bench-dataplane: build
	$(GO) run ./cmd/atomfed-bench -only dataplane -bin $(BIN) -out reports/bench.md \
	  -dp-switchover-rounds $(DP_SWITCHOVER_ROUNDS) -dp-failover-rounds $(DP_FAILOVER_ROUNDS) \
	  -dp-backup-mb $(DP_BACKUP_MB) -dp-backup-rounds $(DP_BACKUP_ROUNDS)

## chaos: the long chaos suite: DURATION of faults (default 10m) over four
## runs (3 and 5 servers, loopback and 80 ms between continents), then a
## data-plane run (PostgreSQL per region; DURATION/5, 1 to 3 min; backups
## and drills during the faults) and a region-loss run (automatic failover),
## nemeses chosen from SEED (default random, printed; pass it to replay); writes
## reports/chaos.md and reports/chaos.json and fails on any violation
DURATION ?= 10m
SEED ?= 0
chaos: build
	$(GO) run ./cmd/atomfed-chaos -bin $(BIN) -duration $(DURATION) -seed $(SEED) -out reports

## chaos-dataplane: the suite's data-plane run alone (faults for a fifth of
## DURATION, 1 to 3 minutes); writes reports/chaos-dataplane.md and .json
chaos-dataplane: build
	$(GO) run ./cmd/atomfed-chaos -bin $(BIN) -duration $(DURATION) -seed $(SEED) -only dataplane -out reports

## bench-go: Go benchmarks of the FSM apply path and the HTTP write path,
## BENCH_COUNT runs each, into reports/bench-go.txt; compare two such files
## with `go run golang.org/x/perf/cmd/benchstat@latest old.txt new.txt`
BENCH_COUNT ?= 6
bench-go:
	@mkdir -p reports
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) ./fsm ./httpapi | tee reports/bench-go.txt

## bench-compare: atomfed and etcd 3.4 (Debian's etcd-server, installed when
## missing) side by side on loopback, alternating runs; writes its section of
## reports/bench.md
bench-compare: build
	@command -v etcd >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq etcd-server etcd-client; }
	$(GO) run ./cmd/atomfed-bench -compare-etcd -bin $(BIN) -etcd-bin $$(command -v etcd) -out reports/bench.md

## reports: run every test exactly as `make test` does (-race; the chaos
## package last and alone), recording `go test -json` in
## reports/logs/go-test.json; start a local federation with a PostgreSQL per
## region (on REPORT_PORT and the ports after it); run `atomfed precheck` and
## `atomfed report --dev-dir` against it (the verifications register a signed
## region, replicate a global table and a tenant in the real databases,
## refuse a forged request and apply approvals with the dev approver keys);
## stop it. Writes reports/G.1.1_registry.md ... G.1.7_policy_manager.md,
## reports/logs/G.1.x.log, reports/PhaseG.1_Snapshot.json and
## reports/G.1_precheck.json, each naming the commit. Fails when a test
## failed, after writing the reports.
REPORTS ?= reports
REPORT_PORT ?= 18401
reports: export ATOMFED_CONSOLE_SHOTS = $(abspath $(REPORTS))/console
reports: build
	@mkdir -p $(REPORTS)/logs
	@status=0; json=$(REPORTS)/logs/go-test.json; \
	echo "== go test -race -json -count=1 (as make test) > $$json"; \
	$(GO) test -race -json -count=1 -timeout 25m $$($(GO) list $(PKGS) | grep -vx '$(CHAOS_PKG)') > $$json || status=$$?; \
	$(GO) test -race -json -count=1 -timeout 15m $(CHAOS_PKG) >> $$json || status=$$?; \
	echo "   go test exited $$status"; \
	p=$(REPORT_PORT); log=$(REPORTS)/logs/federation.log; fed=$$(mktemp -d); \
	chmod 711 $$fed; \
	export FEDERATION_TOKEN=atf_reports_$$(openssl rand -hex 16); \
	echo "== starting a local federation on 127.0.0.1:$$p (log: $$log)"; \
	./$(BIN) dev --data-dir $$fed --http-port $$p --raft-port $$((p+100)) --serf-port $$((p+200)) \
	  --agent-http-port $$((p+10)) --agent-serf-port $$((p+210)) > $$log 2>&1 & dev=$$!; \
	trap 'kill -INT $$dev 2>/dev/null; wait $$dev 2>/dev/null; rm -rf $$fed' EXIT; \
	for i in $$(seq 1 120); do \
	  grep -q "federation is up" $$log && break; \
	  kill -0 $$dev 2>/dev/null || { echo "the federation did not start:"; cat $$log; exit 1; }; \
	  sleep 0.5; \
	done; \
	grep -q "federation is up" $$log || { echo "the federation did not come up within 60s:"; cat $$log; exit 1; }; \
	echo "== atomfed precheck"; \
	GLOBAL_REGISTRY_URL=http://127.0.0.1:$$p ./$(BIN) precheck --out $(REPORTS) || true; \
	echo "== atomfed report"; \
	./$(BIN) report --out $(REPORTS) --addr https://127.0.0.1:$$p --dev-dir $$fed --test-json $$json \
	  --test-command "go test -race -json -count=1 (the packages of make test, then $(CHAOS_PKG))" || exit 1; \
	exit $$status

clean:
	rm -rf bin
