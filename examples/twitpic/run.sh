#!/usr/bin/env bash
# twitpic on this machine: builds warren, starts the fake Twitter API (down
# from 3 s to 13 s, 30 requests a second at most), runs `warren supervise`,
# lets the PHP site enqueue JOBS photo jobs with php-amqplib (200 by
# default), kills the worker posting tweets once mid-run, waits until the
# pipeline drained, and says how many tweets the API created.
#
#     examples/twitpic/run.sh [JOBS]
set -euo pipefail
cd "$(dirname "$0")/../.."
jobs=${1:-200}

cargo build --release --quiet -p warren-command --bin warren
warren=target/release/warren
pipeline=examples/twitpic/pipeline.yaml
out=examples/twitpic/out
mkdir -p "$out"
rm -f "$out"/posted.jsonl "$out"/posted.jsonl.keys "$out"/*.log

state=$(mktemp -d)
TWITTER_STATE=$state TWITTER_OUTAGE=3..13 TWITTER_RATE=30 PHP_CLI_SERVER_WORKERS=4 \
  php -S 127.0.0.1:8090 examples/twitpic/fake_twitter.php > "$out/fake-twitter.log" 2>&1 &
api=$!
supervisor=""
cleanup() {
  [ -n "$supervisor" ] && kill -TERM "$supervisor" 2>/dev/null && wait "$supervisor" 2>/dev/null
  kill "$api" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
for _ in $(seq 1 50); do curl -s 127.0.0.1:8090/stats > /dev/null && break; sleep 0.1; done

$warren declare "$pipeline" > /dev/null
RUST_LOG=info $warren supervise "$pipeline" > "$out/supervisor.log" 2>&1 &
supervisor=$!

php examples/twitpic/enqueue.php "$jobs"

# A worker of `post` dies mid-run (the OOM killer, a deploy gone wrong):
# the calls it had in flight are made again, with the same Idempotency-Key.
sleep 5
pkill -KILL -f "twitpic/pipeline.yaml --stage post" || true

$warren drain "$pipeline" --timeout 5m
stats=$(curl -s 127.0.0.1:8090/stats)
echo "fake Twitter API: $stats"
echo "posted: $(wc -l < "$out/posted.jsonl") tweets in $out/posted.jsonl"
