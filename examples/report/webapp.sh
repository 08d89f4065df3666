#!/usr/bin/env bash
# The report example with a web app: builds warren, runs `warren supervise`
# and `warren serve` on the report pipeline, then `webapp.py` submits a
# request over four databases (one of them gone) and prints the report it
# got back in the job's result.
#
#     examples/report/webapp.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --quiet -p warren-command --bin warren
warren=target/release/warren
pipeline=examples/report/pipeline.yaml
out=examples/report/out
port=${WARREN_REPORT_PORT:-8092}
mkdir -p "$out"

supervisor=""
serve=""
cleanup() {
  [ -n "$serve" ] && kill -TERM "$serve" 2>/dev/null && wait "$serve" 2>/dev/null
  [ -n "$supervisor" ] && kill -TERM "$supervisor" 2>/dev/null && wait "$supervisor" 2>/dev/null
  true
}
trap cleanup EXIT

$warren declare "$pipeline" > /dev/null
RUST_LOG=info $warren supervise "$pipeline" > "$out/supervisor.log" 2>&1 &
supervisor=$!
$warren serve "$pipeline" --listen "127.0.0.1:$port" > "$out/serve.log" 2>&1 &
serve=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
  sleep 0.2
done

python3 examples/report/webapp.py "http://127.0.0.1:$port" db01 db02 db17 old01
