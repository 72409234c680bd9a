# kubectl-tp — the two commands a fresh machine needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
GO ?= go
# Computed once (:=): `make dist` rewrites the tracked krew-manifest.yaml, and a version read again
# afterwards would gain -dirty half-way through a run.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
# Sub-makes (tests/cluster/cluster.sh runs `make image`) see the same version.
export VERSION
IMAGE_REPO ?= ghcr.io/kubectl-tp/podshim
IMAGE ?= $(IMAGE_REPO):$(VERSION)
LDFLAGS := -s -w -X github.com/kubectl-tp/kubectl-tp/internal/version.Version=$(VERSION) \
	-X github.com/kubectl-tp/kubectl-tp/internal/version.ImageRepo=$(IMAGE_REPO)
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
STATE ?= /var/lib/kubectl-tp-e2e
export E2E_KUBECONFIG ?= $(STATE)/admin.kubeconfig
# kubectl (and the kube binaries) built by the cluster harness come first on PATH.
KBIN ?= /var/cache/kubectl-tp/k8s-v1.34.4
export PATH := $(KBIN):/usr/local/go/bin:$(PATH)
E2E_TIMEOUT ?= 45m

.PHONY: all build image test unit lint fuzz fuzz-resolve e2e bench demo cluster-up cluster-down cluster-status clean dist dist-test

all: build image

## build: bin/kubectl-tp (the plugin) and bin/podshim (the in-pod program)
build:
	$(GOBUILD) -o bin/kubectl-tp ./cmd/kubectl-tp
	$(GOBUILD) -o bin/podshim ./cmd/podshim

## image: bin/podshim-image.tar, an OCI image layout tagged with the plugin's default image reference
image: build
	$(GO) run ./cmd/ociimage -ref $(IMAGE) -out bin/podshim-image.tar -user 65532:65532 \
		-entrypoint /podshim bin/podshim:/podshim:0755

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## unit: unit tests with the race detector (no cluster needed)
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /tests/e2e)

## fuzz: each fuzz target for $(FUZZTIME), starting from its seed corpus (testdata/fuzz/<target>; `unit`
## runs the seeds alone). A failing input is written to testdata/fuzz/<target>/ and fails the run.
## -fuzzminimizetime bounds the minimising of each new input, which is slow for the archive target.
FUZZTIME ?= 10s
FUZZMINIMIZETIME ?= 100x
# podshim's FuzzResolve runs on its seeds only (in `unit`): its oracle models an upstream nameserver
# and has met cases it did not model (a query the library packs but cannot read back, seed
# ac1143b1bcec7cb0); `make fuzz-resolve` explores it.
FUZZ_TARGETS := ./tunnel/:FuzzReadFrame ./tunnel/:FuzzReadDNSMsg \
	./podshim/:FuzzResolverCandidates ./capture/:FuzzResolverExchange ./envcapture/:FuzzWriteRead \
	./envcapture/:FuzzRead ./volumes/:FuzzSyncArchive
fuzz:
	@bash hack/fuzz.sh '$(GO)' '$(FUZZTIME)' '$(FUZZMINIMIZETIME)' $(FUZZ_TARGETS)

fuzz-resolve:
	$(GO) test -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./podshim/

## test: everything: lint, unit tests, fuzzing, release archives checked and installed with krew, then
## end-to-end tests on the real local cluster (started if needed)
test: lint unit fuzz dist-test e2e

## e2e: end-to-end tests against $(E2E_KUBECONFIG) (the local cluster, brought up if needed)
e2e: build image cluster-up
	$(GO) test -count=1 -timeout $(E2E_TIMEOUT) -v ./tests/e2e/

## bench: kubectl-tp beside kubectl run / kubectl port-forward on the local cluster (BENCH_RTT=0,20ms,80ms)
BENCH_RTT ?= 0,20ms,80ms
BENCH_RUNS ?= 3
bench: build image cluster-up
	$(GO) run ./tests/bench -plugin bin/kubectl-tp -rtt $(BENCH_RTT) -runs $(BENCH_RUNS)

## demo: bring up the local cluster and show the plugin working (see README)
demo: build image cluster-up
	CGO_ENABLED=0 $(GO) build -o bin/testapp ./tests/testapp
	bash tests/demo.sh

## dist: release archives for linux, darwin, windows × amd64, arm64 (kubectl-tp, kubectl_complete-tp,
## LICENSE), dist/SHA256SUMS, the podshim image for linux/amd64+arm64 as one OCI image index
## (dist/podshim-image.tar, named $(IMAGE)), and krew-manifest.yaml from hack/krew-manifest.tmpl.yaml
DIST ?= dist
DIST_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64
# krew takes only semver: a tag vX.Y.Z[…] as is, else v0.0.0-<describe> (g<hash> when the hash is all digits).
KREW_VERSION ?= $(shell v='$(VERSION)'; if [[ $$v =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]]; then echo "$$v"; \
	elif [[ $$v =~ ^[0-9]+$$ ]]; then echo "v0.0.0-g$$v"; else echo "v0.0.0-$$v"; fi)
dist:
	GO='$(GO)' VERSION='$(VERSION)' KREW_VERSION='$(KREW_VERSION)' LDFLAGS='$(LDFLAGS)' IMAGE='$(IMAGE)' \
	  DIST='$(DIST)' PLATFORMS='$(DIST_PLATFORMS)' IMAGE_PLATFORMS='$(IMAGE_PLATFORMS)' bash hack/dist.sh

## dist-test: check dist/, validate krew-manifest.yaml with krew's validator, install it with krew and run
## `kubectl tp version` and completion through kubectl (krew $(KREW_TOOLS_VERSION), built once into $(KREW_TOOLS))
KREW_TOOLS_VERSION ?= v0.4.4
KREW_TOOLS ?= /var/cache/kubectl-tp/krew-$(KREW_TOOLS_VERSION)
dist-test: dist
	GO='$(GO)' VERSION='$(VERSION)' KREW_VERSION='$(KREW_VERSION)' IMAGE='$(IMAGE)' DIST='$(DIST)' \
	  KREW_TOOLS_VERSION='$(KREW_TOOLS_VERSION)' KREW_TOOLS='$(KREW_TOOLS)' bash tests/dist/install_test.sh

cluster-up:
	bash tests/cluster/cluster.sh up
cluster-down:
	bash tests/cluster/cluster.sh down
cluster-status:
	bash tests/cluster/cluster.sh status

clean:
	rm -rf bin dist
