#!/usr/bin/env bash
# The test command of README.md: installs what the tests need on a fresh machine, then runs
# tier 1 (go test -race ./...) and tier 2 (-tags e2e: whole processes, network namespaces,
# headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "not installing ${need[*]} (needs root and apt): the tests that use them will skip" >&2
  fi
fi

# h2spec, the HTTP/2 conformance suite the h2 codec's test runs (built from the Go
# module proxy; H2SPEC tells the test where it is).
export H2SPEC="${H2SPEC:-$(go env GOPATH)/bin/h2spec}"
if [ ! -x "$H2SPEC" ]; then
  echo "installing: h2spec"
  GOBIN="$(dirname "$H2SPEC")" GOFLAGS=-mod=mod go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
fi

go vet ./...
go vet -tags e2e ./...
# Tier 1. -p 2: a 2-core machine; the race detector multiplies CPU and memory per binary.
go test -race -p 2 -timeout 25m ./...
# Tier 2: the packages with end-to-end tests (build tag e2e): whole processes, the
# local mesh with Bookinfo, headless Chromium.
e2e=$(grep -rl --include='*_test.go' '^//go:build e2e' . | xargs -n1 dirname | sort -u)
# -count=1: they build the binaries in a subprocess, which the test cache cannot see.
go test -race -p 1 -count=1 -timeout 25m -tags e2e $e2e
