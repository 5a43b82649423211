# The two commands of README.md, and what they need.
GO ?= go

.PHONY: demo test build

# weft-proxy is static and built without grpc's x/net/trace (which links html/template
# and keeps every exported method of every type): 3.6 MB less resident per sidecar.
GOFLAGS_BUILD ?= -tags=grpcnotrace

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o bin/ ./cmd/...

# Runs the demo: see README.md.
demo:
	./hack/demo.sh

# Runs every test tier that runs on one machine, installing what they need.
test:
	./hack/test.sh

# Runs the side-by-side benchmark harness (about 25 minutes; BENCHFLAGS=-quick for a
# smoke run) and writes bench/results: see BENCHMARKS.md.
.PHONY: bench
bench:
	$(GO) run ./bench $(BENCHFLAGS)
