#!/usr/bin/env bash
# The report example on this machine: builds warren, serves the callback
# URL, runs `warren supervise`, sends three report requests of 20 databases
# each (the first names two that are gone), waits for each with
# `warren job --wait`, and shows the reports and the callbacks.
#
#     examples/report/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --quiet -p warren-command --bin warren
warren=target/release/warren
pipeline=examples/report/pipeline.yaml
out=examples/report/out
mkdir -p "$out"
rm -f "$out"/reports.jsonl "$out"/reports.jsonl.keys "$out"/callbacks.jsonl "$out"/*.log

python3 examples/report/callbacks.py 8091 "$out/callbacks.jsonl" &
callbacks=$!
supervisor=""
cleanup() {
  [ -n "$supervisor" ] && kill -TERM "$supervisor" 2>/dev/null && wait "$supervisor" 2>/dev/null
  kill "$callbacks" 2>/dev/null || true
}
trap cleanup EXIT

$warren declare "$pipeline" > /dev/null
RUST_LOG=info $warren supervise "$pipeline" > "$out/supervisor.log" 2>&1 &
supervisor=$!

run=$(date +%s)
requests=""
for n in 1 2 3; do
  databases=$(printf '"db%02d",' $(seq 1 20) | sed 's/,$//')
  [ "$n" = 1 ] && databases=$(printf '"db%02d",' $(seq 1 18))'"old01","old02"'
  requests+="{\"report\": \"r$n-$run\", \"databases\": [$databases]}"$'\n'
done
printf '%s' "$requests" | $warren send "$pipeline" split --id-field report > /dev/null

for n in 1 2 3; do
  started=$(date +%s%N)
  $warren job "$pipeline" "r$n-$run" --wait 2m > "$out/job-r$n.txt" || true
  took=$(( ($(date +%s%N) - started) / 1000000 ))
  echo "$(head -1 "$out/job-r$n.txt") (warren job --wait returned after ${took} ms)"
done
echo "reports ($out/reports.jsonl):"
sleep 1
cat "$out/reports.jsonl"
echo "callbacks received ($out/callbacks.jsonl):"
cat "$out/callbacks.jsonl"
