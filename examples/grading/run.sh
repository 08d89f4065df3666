#!/usr/bin/env bash
# The grading crawl on this machine: builds warren and the example programs,
# starts the fake grading API, runs the pipeline on companies.jsonl with
# `warren run`, and stops the API. Extra arguments go to `warren run`
# (for instance --fresh to crawl again what an earlier run finished).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --quiet -p warren-command \
  --bin warren --example grading-worker --example fake-grading-api

mkdir -p examples/grading/out
api_log=examples/grading/out/fake-api.log
target/release/examples/fake-grading-api --port 8089 --latency 30ms --error-rate 0.02 \
  --rate-limit 300 > "$api_log" 2>&1 &
api=$!
trap 'kill $api 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  grep -q "listening on" "$api_log" 2>/dev/null && break
  kill -0 $api 2>/dev/null || { cat "$api_log" >&2; exit 1; }
  sleep 0.1
done

target/release/warren run examples/grading/pipeline.yaml \
  --input examples/grading/companies.jsonl "$@"
echo "results: examples/grading/out/grades.jsonl ($(wc -l < examples/grading/out/grades.jsonl) lines)"
