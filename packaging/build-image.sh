#!/usr/bin/env bash
# Builds the container image `localhost/warren:VERSION` (also `:latest`)
# from packaging/Containerfile with podman, then checks it: `warren
# --version`, the user it runs as, python3 and php with warren's helpers, a
# Python exec pipeline run against the host's broker (`warren run`), and
# stop = drain (`warren supervise` under `podman stop` exits 0).
#
#   packaging/build-image.sh             no registry needed: the base image
#                                        is a debootstrap root (podman
#                                        import) and the package is built on
#                                        the host (packaging/build-deb.sh)
#                                        and handed in for stage 1
#   packaging/build-image.sh --registry  both stages as written, from the
#                                        rust and debian images of a registry
#
# Where podman cannot run containers as configured (this sandbox: a cgroup
# v1/v2 hybrid that crun refuses, and ulimits above the hard limits), it
# shows the error and retries with runc and lower ulimits. To set them
# outright: PODMAN_GLOBAL_FLAGS (before the command, e.g. "--runtime runc")
# and PODMAN_RUN_FLAGS (for run and build, e.g. "--ulimit nofile=1024:1024").
# Installs podman (and runc for the retry) with apt-get when missing.
#
# Takes about 1 minute with the package built (WARREN_DEB) and the base root
# cached; the first run adds the debootstrap (about 1.5 minutes), and
# packaging/build-deb.sh its own time (2 minutes, 10 to 16 when the
# release binary is not up to date).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mode=local
case "${1:-}" in
--registry) mode=registry ;;
--local | "") ;;
*)
    echo "usage: $0 [--local|--registry]" >&2
    exit 2
    ;;
esac
amqp_url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
management_url=${WARREN_MANAGEMENT_URL:-http://guest:guest@127.0.0.1:15672}
broker_lock=${WARREN_BROKER_LOCK:-/tmp/warren-broker.lock}
messages=${MESSAGES:-10}
pipeline="pkgimage_$(date +%s)_$$"
started=$SECONDS

say() { printf '\n== [%3ds] %s\n' $((SECONDS - started)) "$*"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

apt_install() {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

work=$(mktemp -d "${TMPDIR:-/tmp}/warren-image.XXXXXX")
declared=""
container=""
cleanup() {
    local status=$?
    [ -z "$container" ] || podman rm -f "$container" >/dev/null 2>&1 || true
    [ -z "$declared" ] || "$repo/packaging/delete-pipeline.py" "$pipeline" "$management_url" || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

command -v podman >/dev/null || {
    say "installing podman"
    apt_install podman
}

version=$(cargo metadata --format-version 1 --no-deps |
    grep -o '"name":"warren-command","version":"[^"]*"' | cut -d'"' -f8)
commit=$(git log -1 --format=%h --abbrev=7 2>/dev/null || true)
commit_date=$(git log -1 --format=%cs 2>/dev/null || true)
build_args=(--build-arg "WARREN_COMMIT=$commit" --build-arg "WARREN_COMMIT_DATE=$commit_date")

# Flags that make `podman run` and the RUN steps of `podman build` work
# here: none, unless the probe below needs them.
read -r -a global_flags <<<"${PODMAN_GLOBAL_FLAGS:-}"
read -r -a run_flags <<<"${PODMAN_RUN_FLAGS:-}"
run() { podman "${global_flags[@]}" run --rm "${run_flags[@]}" "$@"; }

if [ "$mode" = local ]; then
    say "base image from a debootstrap root"
    base_tar=$("$repo/packaging/debian-root.sh")
    base_image=localhost/warren-debian-base:bookworm
    podman import --quiet "$base_tar" "$base_image" >/dev/null
    podman image ls "$base_image"

    say "can podman run containers here?"
    if error=$(run "$base_image" /bin/true 2>&1); then
        echo "yes, as configured"
    elif [ -z "${PODMAN_GLOBAL_FLAGS:-}${PODMAN_RUN_FLAGS:-}" ]; then
        echo "no, as configured: $error"
        command -v runc >/dev/null || apt_install runc
        nofile=$(ulimit -Hn)
        [ "$nofile" = unlimited ] && nofile=1048576
        global_flags=(--runtime runc)
        run_flags=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
        echo "retrying with: ${global_flags[*]} ${run_flags[*]}"
        error=$(run "$base_image" /bin/true 2>&1) || fail "podman cannot run containers here: $error"
        echo "yes, with: ${global_flags[*]} ${run_flags[*]}"
    else
        fail "podman cannot run containers with the given flags: $error"
    fi

    say "the Debian package, built on the host"
    deb=${WARREN_DEB:-$("$repo/packaging/build-deb.sh" | tail -1)}
    mkdir -p "$work/deb/out"
    cp "$deb" "$work/deb/out/"
    ls -l "$work/deb/out"
    # The build context `deb` stands in for the Containerfile's stage `deb`
    # (its /out/); the rust image is never pulled.
    build_args+=(--build-arg "DEBIAN_IMAGE=$base_image" --build-arg "RUST_IMAGE=$base_image"
        --build-context "deb=$work/deb")
fi

say "podman build"
podman "${global_flags[@]}" build --network host "${run_flags[@]}" "${build_args[@]}" \
    -f packaging/Containerfile -t "localhost/warren:$version" -t localhost/warren:latest . |
    grep -v '^Copying blob\|^Writing manifest\|^Storing signatures\|^Getting image source' || true
podman image exists "localhost/warren:$version" || fail "no image localhost/warren:$version"
podman image ls localhost/warren

say "what is in the image"
run localhost/warren --version
run --entrypoint id localhost/warren
run --entrypoint python3 localhost/warren -c 'import warren_stage, sys; print("python", sys.version.split()[0], "imports warren_stage")'
run --entrypoint php localhost/warren -r 'require "/usr/share/php/warren/WarrenStage.php"; echo "php ", PHP_VERSION, " loads WarrenStage.php\n";'
[ "$(run --entrypoint id localhost/warren -un)" = warren ] || fail "the image does not run as warren"

say "a Python exec pipeline against the host's broker"
uid=$(run --entrypoint id localhost/warren -u)
dir="$work/pipeline"
mkdir -p "$dir"
run --entrypoint cat localhost/warren /etc/warren/example.yaml |
    sed "s/^pipeline: example$/pipeline: $pipeline/" >"$dir/pipeline.yaml"
for i in $(seq 1 "$messages"); do
    printf '{"id": "m%d", "name": "user %d"}\n' "$i" "$i"
done >"$dir/input.jsonl"
chown -R "$uid" "$dir"
exec 9>>"$broker_lock"
flock -s 9
declared=yes
run --network host -e AMQP_URL="$amqp_url" -e RUST_LOG=warn -v "$dir:/var/lib/warren" \
    localhost/warren run pipeline.yaml --input input.jsonl --id-field id
lines=$(wc -l <"$dir/greetings.jsonl")
distinct=$(sort -u "$dir/greetings.jsonl" | wc -l)
[ "$lines" = "$messages" ] && [ "$distinct" = "$messages" ] ||
    fail "the sink has $lines lines ($distinct distinct) for $messages messages"
echo "sink: $lines greetings for $messages messages, each once"

say "stop = drain: warren supervise under podman stop"
# New ids: the sink remembers the ids it wrote (greetings.jsonl's index).
for i in $(seq 1 "$messages"); do
    printf '{"id": "s%d", "name": "user %d"}\n' "$i" "$i"
done >"$dir/input.jsonl"
total=$((messages * 2))
container=$(podman "${global_flags[@]}" run -d "${run_flags[@]}" --network host \
    -e AMQP_URL="$amqp_url" -v "$dir:/var/lib/warren" localhost/warren supervise pipeline.yaml)
podman exec -e AMQP_URL="$amqp_url" "$container" warren send pipeline.yaml greet input.jsonl --id-field id
for _ in $(seq 1 120); do
    [ "$(wc -l <"$dir/greetings.jsonl")" = "$total" ] && break
    sleep 1
done
[ "$(wc -l <"$dir/greetings.jsonl")" = "$total" ] ||
    fail "the supervisor wrote $(($(wc -l <"$dir/greetings.jsonl") - messages)) of $messages greetings"
echo "supervise: $messages more greetings written"
podman stop -t 60 "$container" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
podman logs "$container" 2>&1 | grep -E 'stopping|drain' | tail -3 || true
[ "$code" = 0 ] || fail "warren supervise exited $code after podman stop"
echo "podman stop: drained, exit 0"
flock -u 9

say "build-image: passed ($((SECONDS - started)) s): localhost/warren:$version"
