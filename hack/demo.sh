#!/usr/bin/env bash
# The demo of README.md: Istio's Bookinfo on a local weft mesh (weft demo).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/ ./cmd/weft ./cmd/weft-proxy
exec ./bin/weft demo "$@"
