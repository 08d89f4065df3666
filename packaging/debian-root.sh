#!/usr/bin/env bash
# Prints the path of a tarball of a fresh minimal Debian root (debootstrap
# --variant=minbase, Debian's packages only) with the given packages added,
# making it on first use and keeping it for the next runs:
#
#   packaging/debian-root.sh               the base (for the container image)
#   packaging/debian-root.sh python3       the base with python3
#
# Cache: WARREN_DEBIAN_CACHE (default target/packaging/), one tarball per
# package list; delete it to start over. Making one takes about 2 minutes
# (the download); DEBIAN_SUITE (bookworm) and DEBIAN_MIRROR choose what.
# Needs root; installs debootstrap with apt-get when missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${WARREN_DEBIAN_CACHE:-$repo/target/packaging}
packages=("$@")

name="debian-$suite-minbase"
for package in "${packages[@]}"; do
    name="$name-$package"
done
tarball="$cache/$name.tar"
if [ -s "$tarball" ]; then
    echo "$tarball"
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    echo "debian-root: installing debootstrap" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi
mkdir -p "$cache"
root=$(mktemp -d "$cache/$name.XXXXXX")
trap 'rm -rf "$root" "$root.log" "$tarball.part"' EXIT
include=()
if [ ${#packages[@]} -gt 0 ]; then
    include=("--include=$(IFS=,; echo "${packages[*]}")")
fi
echo "debian-root: debootstrap $suite (minbase ${packages[*]}) from $mirror" >&2
debootstrap --variant=minbase "${include[@]}" "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    exit 1
}
rm -f "$root.log"
# What a container base image leaves out: the package lists and caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar --numeric-owner -C "$root" -cf "$tarball.part" .
mv "$tarball.part" "$tarball"
echo "$tarball"
