#!/usr/bin/env bash
# A throw-away three-node RabbitMQ cluster for warren's cluster tests
# (tests/cluster.rs), from the installed rabbitmq-server, fully separate from
# the broker on 5672 (own node names, ports, data, logs and Erlang cookie).
#
#   cluster.sh up DIR [PREFIX] [BASE_PORT]   # default PREFIX c, BASE_PORT 5701
#   cluster.sh down DIR
#   cluster.sh start-node DIR I              # (re)start node I (after a SIGKILL)
#   cluster.sh ctl DIR I ARGS...             # rabbitmqctl against node I
#   cluster.sh pids DIR                      # the cluster's beam.smp processes
#
# Node i (1..N) is ${PREFIX}${i}@localhost:
#   AMQP       127.0.0.1:BASE_PORT+i-1, and 127.0.0.2 on the same port (a
#              second "box" whose traffic iptables can drop on its own)
#   management 127.0.0.1:BASE_PORT+10000+i-1 (MANAGEMENT=0 turns it off)
#   dist       BASE_PORT+20000+i-1; node i connects to the others from
#              127.0.0.(10+i), so one pair of nodes can be cut by iptables
# Other knobs (env): N=3, COOKIE=<random>, NET_TICKTIME=<s>,
#   PARTITION_HANDLING=ignore|pause_minority|autoheal, RABBIT_ENV=<Erlang
#   terms for the rabbit application in advanced.config, e.g.
#   "{dead_letter_worker_publisher_confirm_timeout, 5000}">.
#
# Pitfalls it avoids: /usr/sbin/rabbitmqctl and rabbitmq-server switch to the
# rabbitmq user and its cookie (the scripts in /usr/lib/rabbitmq/bin do
# not); /etc/rabbitmq/rabbitmq-env.conf names the system node (an empty
# RABBITMQ_CONF_ENV_FILE keeps it out); await_startup fails before the node
# registered with epmd (`wait PIDFILE` first); a 3.10 beam's command line
# does not hold its node name (the nodes are tagged -warren_cluster_dir DIR).
set -euo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin     # call the real scripts, NOT /usr/sbin wrappers (they `su rabbitmq` and cd /var/lib/rabbitmq)

cmd=${1:-}; shift || true
DIR=${1:?the cluster directory}; DIR=$(realpath -m "$DIR")

log() { printf '[cluster %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }

# ---------- per-node environment -------------------------------------------------
node_env() {  # $1 = index; prints export lines (sourced by server start and by rabbitmqctl)
  local i=$1 nd="$DIR/n$1"
  cat <<EOF
export HOME='$DIR/home'
export RABBITMQ_CONF_ENV_FILE='$nd/rabbitmq-env.conf'
export RABBITMQ_NODENAME='${PREFIX}${i}@localhost'
export RABBITMQ_DIST_PORT='$((DIST_BASE + i - 1))'
export RABBITMQ_CONFIG_FILE='$nd/rabbitmq.conf'
export RABBITMQ_ADVANCED_CONFIG_FILE='$nd/advanced.config'
export RABBITMQ_ENABLED_PLUGINS_FILE='$nd/enabled_plugins'
export RABBITMQ_MNESIA_BASE='$nd/mnesia'
export RABBITMQ_LOG_BASE='$nd/log'
export RABBITMQ_PID_FILE='$nd/beam.pid'
export ERL_CRASH_DUMP='$nd/erl_crash.dump'
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1} -kernel inet_dist_connect_options [{ip,{127,0,0,$((10 + i))}}] -warren_cluster_dir $DIR'
unset ERL_FLAGS ERL_AFLAGS ERL_ZFLAGS RABBITMQ_ERLANG_COOKIE RABBITMQ_NODE_PORT RABBITMQ_NODE_IP_ADDRESS
EOF
}

load_state() {
  [ -f "$DIR/cluster.state" ] || { echo "no cluster state in $DIR" >&2; return 1; }
  # shellcheck disable=SC1091
  . "$DIR/cluster.state"
}

ctl() {  # ctl I args...   -> rabbitmqctl against node I with that node's env
  local i=$1; shift
  # At a higher priority than the tests around it (when root): a fault the
  # suites inject must come when they ask, also on a loaded machine.
  ( eval "$(node_env "$i")"; cd "$DIR/n$i"; exec nice -n -5 "$RMQ_BIN/rabbitmqctl" -n "${PREFIX}${i}@localhost" "$@" ) 2> >(grep -v "^nice: cannot set niceness" >&2)
}

start_node() {
  local i=$1 nd="$DIR/n$1"
  # setsid: own session, survives the caller's shell; output goes to a file (no -detached: in 3.10 it is
  # deprecated and the wrapper shell would stay around anyway).
  ( eval "$(node_env "$i")"; cd "$nd"
    exec nice -n -5 setsid "$RMQ_BIN/rabbitmq-server" >"$nd/log/stdout.log" 2>&1 </dev/null ) &
  disown || true
}

wait_node() {  # `await_startup` fails at once if the node is not yet registered in epmd -> `wait PIDFILE` first
  ctl "$1" wait "$DIR/n$1/beam.pid" --timeout 120 >/dev/null && ctl "$1" await_startup --timeout 120 >/dev/null
}

# pids of beam.smp belonging to this cluster dir. NB the 3.10 beam command line does NOT contain the
# node name (-sname is applied at runtime by rabbit_prelaunch), so we tag it with "-warren_cluster_dir DIR"
# and also match RABBITMQ_MNESIA_BASE in /proc/PID/environ. The system broker (user rabbitmq) never matches.
cluster_beams() {
  local p
  for p in $(pgrep -x beam.smp || true); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "-warren_cluster_dir $DIR\( \|$\)"; then
      echo "$p"
    elif tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "RABBITMQ_MNESIA_BASE=$DIR/n[0-9]*/mnesia"; then
      echo "$p"
    fi
  done
}

# ---------- up ---------------------------------------------------------------------
do_up() {
  PREFIX=${2:-${PREFIX:-c}}; BASE_PORT=${3:-${BASE_PORT:-5701}}
  N=${N:-3}; LISTEN_IP=${LISTEN_IP:-127.0.0.1}; MANAGEMENT=${MANAGEMENT:-1}
  MGMT_BASE=${MGMT_BASE:-$((BASE_PORT + 10000))}; DIST_BASE=${DIST_BASE:-$((BASE_PORT + 20000))}
  [ -e "$DIR/cluster.state" ] && { echo "$DIR already holds a cluster; run down first" >&2; exit 1; }
  local t0=$SECONDS i p ok
  for i in $(seq 1 "$N"); do     # refuse to start on busy ports / registered names
    for p in $((BASE_PORT+i-1)) $((DIST_BASE+i-1)) $([ "$MANAGEMENT" = 1 ] && echo $((MGMT_BASE+i-1))); do
      ss -ltnH "sport = :$p" | grep -q . && { echo "port $p busy" >&2; exit 1; }
    done
    epmd -names 2>/dev/null | grep -qw "name ${PREFIX}${i}" && { echo "node name ${PREFIX}${i} already registered in epmd" >&2; exit 1; }
  done

  mkdir -p "$DIR/home"
  COOKIE=${COOKIE:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)}
  ( umask 077; printf '%s' "$COOKIE" >"$DIR/home/.erlang.cookie" ); chmod 400 "$DIR/home/.erlang.cookie"
  cat >"$DIR/cluster.state" <<EOF
PREFIX='$PREFIX'; BASE_PORT='$BASE_PORT'; N='$N'; MGMT_BASE='$MGMT_BASE'; DIST_BASE='$DIST_BASE'; MANAGEMENT='$MANAGEMENT'
EOF
  for i in $(seq 1 "$N"); do
    local nd="$DIR/n$i"; mkdir -p "$nd/mnesia" "$nd/log"
    : >"$nd/rabbitmq-env.conf"   # empty: keeps /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost, ERL_FLAGS) out
    {
      echo "listeners.tcp.1 = $LISTEN_IP:$((BASE_PORT + i - 1))"
      echo "listeners.tcp.2 = 127.0.0.2:$((BASE_PORT + i - 1))"
      echo "loopback_users.guest = true"
      echo "log.file.level = info"
      echo "log.console = false"
      if [ "$MANAGEMENT" = 1 ]; then
        echo "management.tcp.port = $((MGMT_BASE + i - 1))"
        echo "management.tcp.ip = $LISTEN_IP"
      fi
      if [ -n "${PARTITION_HANDLING:-}" ]; then echo "cluster_partition_handling = $PARTITION_HANDLING"; fi
    } >"$nd/rabbitmq.conf"
    local advanced=()
    if [ -n "${NET_TICKTIME:-}" ]; then advanced+=("{kernel, [{net_ticktime, $NET_TICKTIME}]}"); fi
    if [ -n "${RABBIT_ENV:-}" ]; then advanced+=("{rabbit, [$RABBIT_ENV]}"); fi
    if [ ${#advanced[@]} -gt 0 ]; then (IFS=,; echo "[${advanced[*]}].") >"$nd/advanced.config"; fi
    if [ "$MANAGEMENT" = 1 ]; then echo '[rabbitmq_management].' >"$nd/enabled_plugins"
    else echo '[].' >"$nd/enabled_plugins"; fi
    node_env "$i" >"$nd/env.sh"
  done

  for i in $(seq 1 "$N"); do start_node "$i"; done
  for i in $(seq 1 "$N"); do
    wait_node "$i" || { log "node $i failed to boot, see $DIR/n$i/log"; exit 1; }
  done
  log "all $N nodes booted after $((SECONDS - t0))s"

  for i in $(seq 2 "$N"); do
    # start_app prints harmless "[error] Failed to create a tracked connection table for node ..." lines -> join.log
    { ctl "$i" stop_app && ctl "$i" join_cluster "${PREFIX}1@localhost" && ctl "$i" start_app; } >>"$DIR/join.log" 2>&1 \
      || { log "join of node $i failed, see $DIR/join.log"; exit 1; }
  done
  ok=0
  for _ in $(seq 1 60); do
    running=$(ctl 1 cluster_status --formatter json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
    [ "$running" = "$N" ] && { ok=1; break; }; sleep 1
  done
  [ $ok = 1 ] || { log "cluster_status: only $running running nodes"; exit 1; }
  log "cluster up: $N running nodes ($((SECONDS - t0))s total). DIR=$DIR"
  for i in $(seq 1 "$N"); do
    echo "${PREFIX}${i}@localhost amqp://guest:guest@127.0.0.1:$((BASE_PORT+i-1))/" \
         "$([ "$MANAGEMENT" = 1 ] && echo "http://127.0.0.1:$((MGMT_BASE+i-1))/")"
  done
}

# ---------- down -------------------------------------------------------------------
do_down() {
  [ -d "$DIR" ] || { log "$DIR does not exist"; return 0; }
  if load_state; then
    local i
    for i in $(seq 1 "$N"); do   # parallel graceful stop
      ctl "$i" stop "$DIR/n$i/beam.pid" --timeout 30 >/dev/null 2>&1 &   # with pidfile: waits for the OS process to exit
    done
    wait || true
  fi
  local pids; pids=$(cluster_beams)
  if [ -n "$pids" ]; then
    log "killing leftover beam.smp: $pids"; kill -KILL $pids 2>/dev/null || true; sleep 0.5
  fi
  [ -z "$(cluster_beams)" ] || { log "beam.smp still alive: $(cluster_beams)"; exit 1; }
  case "$DIR" in /|/tmp|/var/lib/rabbitmq*|"") echo "refusing to rm $DIR" >&2; exit 1;; esac
  rm -rf "$DIR"
  log "cluster in $DIR stopped and removed"
}

case "$cmd" in
  up)   do_up "$@" ;;
  down) do_down ;;
  env)  load_state; node_env "${2:?node index}" ;;
  start-node) load_state; start_node "${2:?node index}"; wait_node "$2" ;;
  ctl)  load_state; i=${2:?node index}; shift 2; ctl "$i" "$@" ;;
  pids) cluster_beams ;;
  *) echo "usage: $0 up [DIR] [PREFIX] [BASE_PORT] | down [DIR] | env DIR I | start-node DIR I | ctl DIR I args.. | pids [DIR]" >&2; exit 2 ;;
esac
