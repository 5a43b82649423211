# The two commands of README.md, and what they need.
GO ?= go

.PHONY: demo test build

build:
	$(GO) build -o bin/ ./cmd/...

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
