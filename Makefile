# autorollbackd: build, test, and run locally.
SHELL := /bin/bash
GO ?= go

VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH   ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
VERSION_PKG := github.com/prometheus/common/version
LDFLAGS := -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Revision=$(REVISION) \
           -X $(VERSION_PKG).Branch=$(BRANCH) -X $(VERSION_PKG).BuildUser=make \
           -X $(VERSION_PKG).BuildDate=$(shell date -u +%Y%m%d-%H:%M:%S)

.PHONY: all build testenv lint test test-short fuzz bench reliability demo clean

all: build

# TAGS=helm builds the daemon with the Helm SDK (policy.helm.mode rollback-release).
TAGS ?=

## build: compile bin/autorollbackd (TAGS=helm: with the Helm SDK)
build:
	$(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/autorollbackd ./cmd/autorollbackd

## testenv: build the pinned local control plane, Prometheus, Alertmanager, Helm and the Argo Rollouts controller into the cache, with the CRDs of Argo Rollouts, Argo CD and Flux
testenv:
	hack/testenv.sh >/dev/null

## lint: gofmt, go vet, no tracked built binary, go.mod and go.sum tidy
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags helm ./...
	GO=$(GO) hack/lint-repo.sh

## test: everything: lint, unit and integration tests against the local control plane with -race (with the Helm SDK, and the packages that differ without it), then brief fuzzing
test: testenv lint
	TESTENV_BIN=$$(hack/testenv.sh --print) $(GO) test -race -count=1 -timeout 45m -tags helm $$($(GO) list ./... | grep -v /internal/reliability)
	TESTENV_BIN=$$(hack/testenv.sh --print) $(GO) test -race -count=1 -timeout 10m ./internal/helm/ ./internal/policy/ ./internal/chart/
	$(MAKE) reliability
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

# Each fuzz target, as package:target.
FUZZ_TARGETS := ./internal/config:FuzzLoad ./internal/webhook:FuzzDecode ./internal/webhook:FuzzDecodeValid \
	./internal/policy:FuzzCompileMatchers ./internal/policy:FuzzDNS1123 \
	./internal/strtemplate:FuzzMatchesTextTemplate
# A count of executions, not a duration: with a duration, Go 1.26's fuzzing
# coordinator can fail a target with "context deadline exceeded" as the
# deadline passes (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 2000x

## fuzz: run every fuzz target for FUZZTIME (default 2000x, executions; try FUZZTIME=200000x)
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} in $${t%%:*} for $(FUZZTIME)"; \
	  $(GO) test -run='^$$' -fuzz="^$${t#*:}$$" -fuzztime=$(FUZZTIME) "$${t%%:*}"; \
	done

## test-short: the fast unit tests only
test-short:
	$(GO) test -short ./...

## reliability: the reliability suite, verbose so that its outcomes show (alert storm, crash anywhere, API server outage, conflicts, failover, bad input); part of test
reliability: testenv
	TESTENV_BIN=$$(hack/testenv.sh --print) $(GO) test -race -count=1 -v -timeout 30m ./internal/reliability/

## bench: the benchmarks of bench/ (not part of test); writes bench/RESULTS.md
bench: testenv
	bench/run.sh

## demo: the whole loop, narrated: a bad rollout rolled back, a non-critical alert fixed forward (DEMO_FLAGS=--once to exit)
demo: testenv
	TESTENV_BIN=$$(hack/testenv.sh --print) $(GO) run ./hack/demo $(DEMO_FLAGS)

clean:
	rm -rf bin
