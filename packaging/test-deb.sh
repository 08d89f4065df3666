#!/usr/bin/env bash
# End-to-end test of the Debian package, as a new user would meet it on a
# machine that has never seen Rust (packaging/README.md, "What test-deb.sh
# proves"):
#
#  1. builds the package (packaging/build-deb.sh), or takes WARREN_DEB;
#  2. unpacks a fresh minimal Debian root (packaging/debian-root.sh, cached:
#     minbase, python3, systemd; no cargo or rustc) and `apt-get install`s
#     the .deb into it;
#  3. inside it: `warren --version`, the files, the user, man page and
#     completions, `warren validate` of the shipped example;
#  4. makes a pipeline with `warren init --lang python` (make_pipeline),
#     runs its Python exec stage into its sink with `warren run` as user
#     `warren` against the broker on the host (AMQP_URL, default
#     127.0.0.1:5672; the chroot shares the host's network), and checks
#     every message was written once;
#  5. checks the units with `systemd-analyze verify` and rates them with
#     `systemd-analyze security` (failing above WARREN_MAX_EXPOSURE);
#  6. boots the root with systemd (systemd-nspawn; WARREN_TEST_BOOT=0
#     skips it) and drives the units: start, send, reload (a good file and
#     a broken one), stop = drain with messages in flight, start again
#     (every message once), warren-serve@ answering /healthz, then the
#     maintainer scripts: a reinstall restarts the running instance, a
#     removal stops it;
#  7. removes (keeping the conffiles), then purges the package.
#
# Needs root (chroot, mount, nspawn). Installs debootstrap, systemd and
# systemd-container with apt-get when missing. Takes about 50 s with the
# root cached and the package built; building the package adds about 2
# minutes when the release binary is up to date (cargo deb's compression)
# and 8 to 14 more when it is not (fat LTO on 2 shared cores); the first
# run adds the debootstrap (about 2 minutes). Deletes what it declared on
# the broker and the root it unpacked.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
amqp_url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
management_url=${WARREN_MANAGEMENT_URL:-http://guest:guest@127.0.0.1:15672}
broker_lock=${WARREN_BROKER_LOCK:-/tmp/warren-broker.lock}
expected=""
declared=""
messages=${MESSAGES:-25}
max_exposure=${WARREN_MAX_EXPOSURE:-5.0}
# The pipeline's name on the shared broker: its own, so runs never meet.
pipeline="pkgtest_$(date +%s)_$$"
started=$SECONDS

say() { printf '\n== [%3ds] %s\n' $((SECONDS - started)) "$*"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

root=""
nspawn=""
service=""
cleanup() {
    local status=$?
    if [ -n "$nspawn" ]; then
        kill "$nspawn" 2>/dev/null || true
        wait "$nspawn" 2>/dev/null || true
    fi
    if [ -n "$root" ]; then
        rm -rf "$root.boot.log" "$root.apt.log" "/run/systemd/nspawn/propagate/$(basename "$root")"
        umount "$root/proc" 2>/dev/null || true
        if grep -q " $root/" /proc/mounts; then
            echo "test-deb: $root still has mounts; not deleting it" >&2
        else
            rm -rf "$root"
        fi
    fi
    if [ -n "$declared" ]; then
        "$repo/packaging/delete-pipeline.py" "$pipeline" "$management_url" || true
        [ -z "$service" ] || "$repo/packaging/delete-pipeline.py" "$service" "$management_url" || true
    fi
    exit "$status"
}

# A command inside the root, with a clean environment.
in_root() {
    chroot "$root" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

# A command inside the root as user `warren`, in the pipeline's working
# directory, with the broker's address: as the systemd units run it.
as_warren() {
    in_root runuser -u warren -- env AMQP_URL="$amqp_url" \
        sh -c 'cd "$0" && exec "$@"' "/var/lib/warren/$pipeline" "$@"
}

install_host_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} on the host"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Makes the pipeline directory /var/lib/warren/$pipeline (owned by
# `warren`) with `warren init --lang python`, as a new user starts: an empty
# folder named after the pipeline, so the pipeline gets the test's own name.
# Its Python stage runs `python3`, which has the package's warren_stage;
# its input, names.jsonl, is replaced by $messages names with ids, and
# `expected` set to the greetings the sink should hold after the run.
make_pipeline() {
    local dir="/var/lib/warren/$pipeline"
    in_root install -d -o warren -g warren "$dir"
    as_warren warren init . --lang python
    for file in pipeline.yaml greet.py names.jsonl README.md; do
        test -f "$root$dir/$file" || fail "warren init made no $file"
    done
    grep -q "^pipeline: $pipeline$" "$root$dir/pipeline.yaml" ||
        fail "warren init did not name the pipeline after its folder: $(grep '^pipeline:' "$root$dir/pipeline.yaml")"
    for i in $(seq 1 "$messages"); do
        printf '{"id": "m%d", "name": "user %d"}\n' "$i" "$i"
    done >"$root$dir/names.jsonl"
    in_root chown warren:warren "$dir/names.jsonl"
    expected=$(for i in $(seq 1 "$messages"); do echo "Hello, user $i!"; done)
    echo "pipeline: made by 'warren init --lang python' in $dir"
    as_warren warren validate pipeline.yaml
}

# Runs the pipeline over its input with `warren run` (declare, send,
# supervise until everything is processed; exit 1 if anything was
# dead-lettered) holding the shared broker lock, as its README says, then
# checks what the sink wrote: the expected greetings once each.
run_pipeline() {
    local dir="/var/lib/warren/$pipeline"
    exec 9>>"$broker_lock"
    flock -s 9
    declared=yes
    as_warren env RUST_LOG=warn warren run pipeline.yaml --input names.jsonl --id-field id
    flock -u 9
    local sink="$root$dir/out/greetings.jsonl"
    [ -f "$sink" ] || fail "no sink file $dir/out/greetings.jsonl"
    python3 -c '
import json, sys
got = sorted(json.loads(line).get("greeting") for line in open(sys.argv[1]))
expected = sorted(line for line in sys.argv[2].splitlines() if line)
if got != expected:
    sys.exit(f"the sink has {len(got)} lines, {len(set(map(str, got)))} distinct; want the {len(expected)} greetings once each")
print(f"sink: {len(got)} greetings for {len(expected)} messages, each once")
' "$sink" "$expected"
    local owner
    owner=$(in_root stat -c %U "$dir/out/greetings.jsonl")
    [ "$owner" = warren ] || fail "the sink file is owned by $owner, not warren"
}

check_units() {
    local unit out
    for unit in warren-supervise@ warren-serve@; do
        # verify: syntax, known settings, the binary exists in the root.
        # --man=no: the pages are in the root, where the host's man does not look.
        out=$(systemd-analyze verify --man=no --root="$root" "$unit$pipeline.service" 2>&1) ||
            fail "systemd-analyze verify $unit$pipeline.service: $out"
        if [ -n "$out" ]; then
            echo "$out"
            fail "systemd-analyze verify $unit$pipeline.service warned"
        fi
        echo "systemd-analyze verify $unit$pipeline.service: clean"
        out=$(systemd-analyze security --offline=true --root="$root" \
            --threshold="$(awk "BEGIN { print int($max_exposure * 10) }")" \
            "$unit$pipeline.service" 2>&1) || {
            echo "$out"
            fail "$unit: exposure over $max_exposure"
        }
        echo "systemd-analyze security $unit: $(echo "$out" | grep 'Overall exposure')"
    done
}

# Boots the root with systemd (systemd-nspawn, sharing the host's network)
# and drives the units as an administrator would: warren-supervise@ for a
# pipeline of its own in /etc/warren, messages sent, reload after an edit,
# stop = drain (exit 0, every message written once across stop and start),
# warren-serve@ answering /healthz, and systemd-analyze security on the
# running units.
leader=""
in_system() {
    nsenter -t "$leader" -a /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

# Waits until `cmd` (a shell command on the host) succeeds, at most $1 s.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until eval "$*"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 1
    done
}

# The end of a unit's journal, for failure messages.
unit_log() {
    in_system journalctl -u "$1" -o cat --no-pager | tail -n 15
}

sink_lines() {
    local file="$root/var/lib/warren/$service/greetings.jsonl"
    if [ -f "$file" ]; then wc -l <"$file"; else echo 0; fi
}

send_greetings() { # FIRST LAST: sends greetings FIRST..LAST to the service's pipeline
    for i in $(seq "$1" "$2"); do
        printf '{"id": "s%d", "name": "user %d"}\n' "$i" "$i"
    done >"$root/var/tmp/send.jsonl"
    in_system runuser -u warren -- env AMQP_URL="$amqp_url" \
        warren send "/etc/warren/$service.yaml" greet /var/tmp/send.jsonl --id-field id
}

# apt-get in the booted root, its output shown only when it fails.
apt_in_system() {
    in_system env DEBIAN_FRONTEND=noninteractive apt-get "$@" >"$root.apt.log" 2>&1 ||
        fail "apt-get $*: $(cat "$root.apt.log")"
}

# apt-get in the chroot, the same way.
apt_in_root() {
    in_root env DEBIAN_FRONTEND=noninteractive apt-get "$@" >"$root.apt.log" 2>&1 ||
        fail "apt-get $*: $(cat "$root.apt.log")"
}

# `apt-get remove` (unless done already) then `purge`, through $1
# (apt_in_root or apt_in_system): remove keeps the conffiles, purge does not.
check_removal() {
    if [ -e "$root/usr/bin/warren" ]; then
        "$1" remove -y warren
    fi
    test ! -e "$root/usr/bin/warren" || fail "remove left /usr/bin/warren"
    test -f "$root/etc/warren/example.yaml" || fail "remove deleted the conffile"
    "$1" purge -y warren
    test ! -e "$root/etc/warren/example.yaml" || fail "purge left /etc/warren/example.yaml"
    echo "removed: binary gone, conffiles kept; purged: conffiles gone"
}

boot_and_drive_units() {
    service="${pipeline}_svc"
    # The example, with a handler 0.2 s slower per message, so that stopping
    # finds messages in flight.
    mkdir -p "$root/usr/local/lib/warren-test"
    cat >"$root/usr/local/lib/warren-test/slow_greet.py" <<'PY'
import time
import warren_stage

def greet(body, ctx):
    time.sleep(0.2)
    ctx.emit({"greeting": f"Hello, {body['name']}!", "attempt": ctx.attempt})

warren_stage.run(greet)
PY
    in_root sed -e "s/^pipeline: example$/pipeline: $service/" \
        -e "s|/var/lib/warren/example/|/var/lib/warren/$service/|" \
        -e "s|/usr/share/warren/examples/greet.py|/usr/local/lib/warren-test/slow_greet.py|" \
        /etc/warren/example.yaml >"$root/etc/warren/$service.yaml"
    port=$((20000 + RANDOM % 20000))
    printf 'AMQP_URL=%s\nWARREN_LISTEN=127.0.0.1:%d\n' "$amqp_url" "$port" >"$root/etc/warren/$service.env"
    chmod 600 "$root/etc/warren/$service.env"
    umount "$root/proc"

    systemd-nspawn --quiet --keep-unit --register=no -D "$root" -b --console=pipe \
        >"$root.boot.log" 2>&1 &
    nspawn=$!
    wait_for 30 'leader=$(pgrep -P $nspawn | head -1); [ -n "$leader" ]' ||
        fail "systemd-nspawn did not start: $(cat "$root.boot.log")"
    wait_for 60 '[[ "$(in_system systemctl is-system-running 2>/dev/null)" =~ ^(running|degraded)$ ]]' ||
        fail "the root did not boot: $(in_system systemctl is-system-running)"
    echo "booted: systemd $(in_system systemctl --version | head -1 | cut -d' ' -f2), $(in_system systemctl is-system-running)"

    exec 9>>"$broker_lock"
    flock -s 9
    declared=yes
    in_system systemctl start "warren-supervise@$service" ||
        fail "start failed: $(unit_log "warren-supervise@$service")"
    echo "started warren-supervise@$service: $(in_system systemctl is-active "warren-supervise@$service")"
    send_greetings 1 "$messages"
    wait_for 120 '[ "$(sink_lines)" -ge "$messages" ]' ||
        fail "warren-supervise@$service wrote $(sink_lines) of $messages greetings: $(unit_log "warren-supervise@$service")"
    echo "sink: $(sink_lines) greetings, written by $(in_system stat -c %U "/var/lib/warren/$service/greetings.jsonl")"

    # Reload: a changed setting replaces the stage's workers.
    sed -i 's/^    concurrency: 8 /    concurrency: 4 /' "$root/etc/warren/$service.yaml"
    in_system systemctl reload "warren-supervise@$service" ||
        fail "reload failed: $(unit_log "warren-supervise@$service")"
    wait_for 30 'in_system journalctl -u "warren-supervise@$service" | grep -q "SIGHUP: reloaded"' ||
        fail "no 'SIGHUP: reloaded' in the journal"
    echo "reload: $(in_system journalctl -u "warren-supervise@$service" -o cat | grep -E 'settings changed|SIGHUP' | tail -2 | tr '\n' ' ')"
    # A reload with a broken file fails and changes nothing.
    cp "$root/etc/warren/$service.yaml" "$root/var/tmp/good.yaml"
    echo "stages: {" >>"$root/etc/warren/$service.yaml"
    if in_system systemctl reload "warren-supervise@$service" 2>/dev/null; then
        fail "reload accepted a broken file"
    fi
    cp "$root/var/tmp/good.yaml" "$root/etc/warren/$service.yaml"
    [ "$(in_system systemctl is-active "warren-supervise@$service")" = active ] ||
        fail "a failed reload stopped the service"
    echo "reload of a broken file: refused, still active"

    # Stop = drain, while messages are in flight: nothing lost, nothing twice.
    local total=$((messages * 3))
    send_greetings $((messages + 1)) "$total"
    wait_for 60 '[ "$(sink_lines)" -gt "$messages" ]' || true
    local before
    before=$(sink_lines)
    in_system systemctl stop "warren-supervise@$service"
    echo "stopped with $before of $total written, $(sink_lines) after the drain"
    local result
    result=$(in_system systemctl show -p Result -p ExecMainStatus --value "warren-supervise@$service" | tr '\n' ' ')
    echo "stop: Result ExecMainStatus = $result; $(in_system journalctl -u "warren-supervise@$service" -o cat | grep -E 'stopping: draining|all workers stopped' | tr '\n' ' ')"
    [ "$result" = "success 0 " ] || fail "stop did not drain cleanly: $result: $(unit_log "warren-supervise@$service")"
    in_system systemctl start "warren-supervise@$service"
    wait_for 120 '[ "$(sink_lines)" -ge "$total" ]' ||
        fail "after a restart: $(sink_lines) of $total: $(unit_log "warren-supervise@$service")"
    python3 - "$root/var/lib/warren/$service/greetings.jsonl" "$total" <<'PY'
import json, sys
greetings = [json.loads(line)["greeting"] for line in open(sys.argv[1])]
want = sorted(f"Hello, user {i}!" for i in range(1, int(sys.argv[2]) + 1))
if sorted(greetings) != want:
    sys.exit(f"{len(greetings)} lines, {len(set(greetings))} distinct, want {len(want)} once each")
print(f"across stop and start: {len(greetings)} greetings, each once")
PY
    # `warren status` as README.Debian tells an administrator to run it
    # finds the running supervisor (its socket in /run/warren).
    local status
    status=$(in_system sh -c "set -a; . /etc/warren/$service.env; export XDG_RUNTIME_DIR=/run;
        exec runuser -u warren -- warren status /etc/warren/$service.yaml") ||
        fail "warren status: $status"
    if grep -q 'no supervisor of this pipeline runs on this box' <<<"$status"; then
        fail "warren status does not see the supervisor: $status"
    fi
    echo "warren status (as README.Debian says):"
    sed 's/^/    /' <<<"$status"
    in_system systemctl stop "warren-supervise@$service"

    # The front door.
    in_system systemctl start "warren-serve@$service"
    wait_for 60 "python3 -c 'import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:$port/healthz\", timeout=2)' 2>/dev/null" ||
        fail "warren-serve@$service does not answer on $port: $(in_system journalctl -u "warren-serve@$service" -o cat | tail -5)"
    echo "warren-serve@$service: /healthz answers on 127.0.0.1:$port"
    in_system systemctl stop "warren-serve@$service"
    result=$(in_system systemctl show -p Result -p ExecMainStatus --value "warren-serve@$service" | tr '\n' ' ')
    [ "$result" = "success 0 " ] || fail "warren-serve stop: $result: $(unit_log "warren-serve@$service")"

    local unit
    for unit in warren-supervise warren-serve; do
        echo "systemd-analyze security $unit@ (running system): $(in_system systemd-analyze security "$unit@$service.service" | grep 'Overall exposure')"
    done

    # The maintainer scripts with systemd running: an upgrade (here the same
    # version again) restarts running instances; removal stops them.
    in_system systemctl start "warren-supervise@$service"
    local pid_before pid_after
    pid_before=$(in_system systemctl show -p MainPID --value "warren-supervise@$service")
    apt_in_system install --reinstall -y "/var/tmp/$(basename "$deb")"
    pid_after=$(in_system systemctl show -p MainPID --value "warren-supervise@$service")
    [ "$(in_system systemctl is-active "warren-supervise@$service")" = active ] &&
        [ "$pid_after" != "$pid_before" ] ||
        fail "reinstalling did not restart warren-supervise@$service ($pid_before -> $pid_after)"
    echo "reinstall: warren-supervise@$service restarted (MainPID $pid_before -> $pid_after)"
    apt_in_system remove -y warren
    result="$(in_system systemctl show -p ActiveState --value "warren-supervise@$service")"
    result="$result $(in_system systemctl show -p Result --value "warren-supervise@$service")"
    [ "$result" = "inactive success" ] || fail "removal left warren-supervise@$service $result"
    echo "remove: warren-supervise@$service stopped ($result)"
    flock -u 9
    check_removal apt_in_system
    in_system systemctl poweroff >/dev/null 2>&1 || true
    wait_for 60 '! kill -0 $nspawn 2>/dev/null' || kill "$nspawn"
    nspawn=""
}

main() {
    trap cleanup EXIT
    [ "$(id -u)" = 0 ] || fail "run as root (chroot, mount)"
    install_host_tools

    say "the package"
    local deb=${WARREN_DEB:-}
    if [ -z "$deb" ]; then
        deb=$("$repo/packaging/build-deb.sh" | tail -1)
    fi
    test -f "$deb" || fail "no package $deb"
    ls -l "$deb"
    dpkg-deb --info "$deb" | sed -n '/Package:/,$p'

    say "a fresh Debian root"
    local tarball
    tarball=$("$repo/packaging/debian-root.sh" python3 systemd)
    root=$(mktemp -d "${TMPDIR:-/tmp}/warren-deb-test.XXXXXX")
    tar --numeric-owner -C "$root" -xf "$tarball"
    chmod 755 "$root" # mktemp made it 0700: the root's / must be 0755
    mount -t proc proc "$root/proc"
    in_root sh -c '! command -v cargo && ! command -v rustc' >/dev/null ||
        fail "the root has Rust"
    echo "$(in_root cat /etc/debian_version), no cargo or rustc; $(in_root python3 --version)"

    say "apt-get install ./$(basename "$deb")"
    cp "$deb" "$root/tmp/"
    cp "$deb" "$root/var/tmp/" # for the reinstall: the booted root's /tmp is a tmpfs
    # (apt's stderr only on failure: in a chroot it warns that /dev/pts is
    # not mounted and that _apt cannot read the file.)
    in_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "./tmp/$(basename "$deb")" \
        >"$root.apt.log" 2>&1 || {
        cat "$root.apt.log"
        fail "apt-get install failed"
    }
    grep -E '^(Setting up|Unpacking|The following|  )' "$root.apt.log" || true
    in_root dpkg -s warren | grep -E '^(Status|Version|Depends):'

    say "warren --version"
    local version
    version=$(in_root warren --version)
    echo "$version"
    [[ "$version" =~ ^warren\ [0-9]+\.[0-9]+\.[0-9]+\ \(([0-9a-f]{7}|unknown)( [0-9]{4}-[0-9]{2}-[0-9]{2})?\)$ ]] ||
        fail "unexpected version line"

    say "what the package installed"
    local file
    for file in /usr/bin/warren /usr/lib/systemd/system/warren-supervise@.service \
        /usr/lib/systemd/system/warren-serve@.service /etc/warren/example.yaml \
        /etc/warren/example.env /usr/share/warren/examples/greet.py \
        /usr/lib/python3/dist-packages/warren_stage/__init__.py /usr/share/php/warren/WarrenStage.php \
        /usr/share/php/warren/src/Worker.php /usr/share/php/warren/src/Client/Busy.php \
        /usr/share/man/man1/warren.1.gz /usr/share/man/man1/warren-supervise.1.gz \
        /usr/share/bash-completion/completions/warren /usr/share/zsh/vendor-completions/_warren \
        /usr/share/fish/vendor_completions.d/warren.fish /usr/share/doc/warren/copyright \
        /usr/share/doc/warren/README.Debian; do
        test -f "$root$file" || fail "$file is missing"
    done
    echo "files: all there"
    [ "$(stat -c %a "$root/etc/warren/example.env")" = 600 ] || fail "example.env is not 0600"
    in_root dpkg-query -W -f='${Conffiles}\n' warren | grep -q /etc/warren/example.yaml ||
        fail "/etc/warren/example.yaml is not a conffile"
    in_root getent passwd warren | grep -q ':/var/lib/warren:/usr/sbin/nologin$' ||
        fail "no system user warren: $(in_root getent passwd warren)"
    echo "user: $(in_root id warren)"
    zcat "$root/usr/share/man/man1/warren.1.gz" | grep -q '^\.TH warren 1' || fail "warren.1 is not a man page"
    in_root bash -c 'source /usr/share/bash-completion/completions/warren
        COMP_WORDS=(warren sup); COMP_CWORD=1; _warren warren sup warren; echo "${COMPREPLY[@]}"' |
        grep -qx supervise || fail "bash does not complete 'warren sup'"
    echo "man page: warren(1); bash completes 'warren sup' to 'supervise'"
    in_root python3 -c 'import warren_stage' || fail "python3 cannot import warren_stage"
    in_root warren validate /etc/warren/example.yaml

    say "a Python exec pipeline, as user warren, against the host's broker"
    make_pipeline
    run_pipeline

    say "systemd units"
    check_units

    if [ "${WARREN_TEST_BOOT:-1}" != 0 ]; then
        say "the units under systemd (systemd-nspawn --boot), reinstall, remove, purge"
        boot_and_drive_units
    else
        say "apt-get remove, then purge"
        check_removal apt_in_root
    fi

    say "test-deb: passed ($((SECONDS - started)) s)"
}

main "$@"
