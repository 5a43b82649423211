#!/usr/bin/env bash
# The demo of README.md: Istio's Bookinfo on a local weft mesh (weft demo).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
# Static, without grpc's x/net/trace: a smaller sidecar (see Makefile).
CGO_ENABLED=0 go build -tags=grpcnotrace -o bin/ ./cmd/weft ./cmd/weft-proxy
exec ./bin/weft demo "$@"
