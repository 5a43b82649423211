#!/usr/bin/env bash
# The demo of README.md: weft-proxy on a static bootstrap in front of a sample service.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/ ./cmd/weft-proxy ./examples/hello
./bin/hello -addr 127.0.0.1:8080 & app=$!
./bin/weft-proxy -c examples/proxy/bootstrap.yaml --health-address 127.0.0.1:15021 --stats-address 127.0.0.1:15090 & proxy=$!
trap 'kill $proxy $app 2>/dev/null; wait' EXIT INT TERM
cat <<MSG

  the sample service:   http://127.0.0.1:8080/
  through weft-proxy:   curl -v http://127.0.0.1:10000/hello
  admin:                http://127.0.0.1:15000/  (/config_dump, /clusters, /stats)
  Prometheus:           http://127.0.0.1:15090/stats/prometheus

  Ctrl-C stops both.
MSG
wait $proxy
