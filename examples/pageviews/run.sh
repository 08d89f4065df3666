#!/usr/bin/env bash
# pageviews on this machine: builds warren, starts a PostgreSQL of its own
# (Debian's binaries; data and socket in a temporary folder, removed at the
# end), creates the table, checks the pipeline against it, runs `warren
# supervise --http`, posts EVENTS page views (20,000 by default) through
# `warren serve`, waits until the pipeline drained, and queries the table.
#
#     examples/pageviews/run.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/../.."
events=${1:-20000}

cargo build --release --quiet -p warren-command --bin warren
warren=$PWD/target/release/warren
pipeline=examples/pageviews/pipeline.yaml
out=examples/pageviews/out
mkdir -p "$out"

bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg=$(mktemp -d)
as=()
if [ "$(id -u)" = 0 ]; then chown postgres "$pg"; as=(runuser -u postgres --); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
http=$(free_port)
"${as[@]}" "$bin/initdb" -D "$pg/data" -U warren --auth=trust -E UTF8 > /dev/null
"${as[@]}" "$bin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w \
  -o "-p $port -k $pg -c listen_addresses=127.0.0.1" start > /dev/null
supervisor=""
cleanup() {
  [ -n "$supervisor" ] && kill -TERM "$supervisor" 2>/dev/null && wait "$supervisor" 2>/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$pg/data" -m fast -w stop > /dev/null || true
  rm -rf "$pg"
}
trap cleanup EXIT
# The sink (and psql) find the database through these.
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=warren PGDATABASE=postgres
psql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -f examples/pageviews/schema.sql

$warren validate "$pipeline"
$warren declare "$pipeline" > /dev/null
RUST_LOG=info $warren supervise "$pipeline" --http "127.0.0.1:$http" > "$out/supervisor.log" 2>&1 &
supervisor=$!
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$http/readyz" > /dev/null && break; sleep 0.1; done

python3 examples/pageviews/load.py "http://127.0.0.1:$http" "$events"
$warren drain "$pipeline" --timeout 10m

psql -c "SELECT browser, device, count(*) AS views, round(avg(load_ms)) AS avg_load_ms
         FROM pageviews GROUP BY 1, 2 ORDER BY views DESC LIMIT 8"
psql -A -t -c "SELECT count(*) || ' rows, ' || count(DISTINCT id) || ' ids; from POST to row: p50 '
         || round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM written_at) - ts))
         || ' ms, p99 '
         || round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM written_at) - ts))
         || ' ms; ' || round(count(*) * 60 / greatest(0.001, extract(epoch FROM max(written_at)) - min(ts)))
         || ' a minute from the first POST to the last row'
         FROM (SELECT id, written_at, (doc->>'ts')::float8 / 1000 AS ts FROM pageviews) v"
