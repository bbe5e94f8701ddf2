# Build, test and demo. `make test` is what CI runs (.ci/run).
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

.PHONY: build deps test unit e2e demo bench clean vet generate docker-plugin

build:
	CGO_ENABLED=0 go build -o $(BIN)/ ./cmd/calicoctl ./cmd/calico-node ./cmd/calico-bench ./cmd/calico ./cmd/calico-ipam ./cmd/calico-datastore

deps:
	bash scripts/install-deps.sh

vet:
	test -z "$$(gofmt -l cmd internal test 2>/dev/null)" || (gofmt -l cmd internal test; echo "gofmt needed"; exit 1)
	go vet ./...

# Everything: unit tests, kernel tests on namespaces, end-to-end tests.
test: deps build vet
	bash scripts/check-bpf.sh
	bash scripts/ensure-docker.sh
	CALICO_BIN=$(BIN) go test -count=1 -p 1 -timeout 60m ./...
	bash scripts/fuzz.sh

demo: deps build
	$(BIN)/calicoctl demo

# Throughput, latency, setup, policy and control-plane figures side by side
# (about 12 minutes); writes bench/results.json, results.md and PNG plots.
bench: deps build
	$(BIN)/calico-bench

# Regenerate the committed BPF objects from their C (needs clang, libbpf-dev).
generate:
	go generate ./internal/dataplane/ipip ./internal/dataplane/fastpath

# A Docker managed plugin bundle from the local build (no registry):
# docker plugin create calico bin/docker-plugin
docker-plugin: build
	bin/calicoctl node docker-plugin bin/docker-plugin

clean:
	rm -rf $(BIN)
