# atomfed — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/atomfed
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
PKGS := ./...

.PHONY: all build run test test-short lint bench chaos fuzz clean

all: build

## build: compile the atomfed binary into bin/
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/atomfed

## run: start a whole local federation (3 servers, 3 regions; API on 127.0.0.1:8401)
run: build
	./$(BIN) dev

## lint: gofmt check and go vet
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

## test: lint, then every test with the race detector (unit, FSM, in-process
## clusters, multi-process clusters of the real binary)
test: lint
	$(GO) test -race -count=1 -timeout 25m $(PKGS)

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

## bench: 3 server processes on loopback with fsync on; writes reports/bench.md
bench: build
	$(GO) run ./cmd/atomfed-bench -bin $(BIN) -out reports/bench.md

## chaos: the long chaos suite: DURATION of faults (default 10m) over four
## runs (3 and 5 servers, loopback and 80 ms between continents), nemeses
## chosen from SEED (default random, printed; pass it to replay); writes
## reports/chaos.md and reports/chaos.json and fails on any violation
DURATION ?= 10m
SEED ?= 0
chaos: build
	$(GO) run ./cmd/atomfed-chaos -bin $(BIN) -duration $(DURATION) -seed $(SEED) -out reports

clean:
	rm -rf bin
