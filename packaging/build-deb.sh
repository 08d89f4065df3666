#!/usr/bin/env bash
# Builds the Debian package target/debian/warren_VERSION-1_amd64.deb (and
# warren-dbgsym_VERSION-1_amd64.ddeb, its line tables) and prints the
# package's path as the last line: a release build of the `warren` binary,
# its man pages and shell completions generated from it (`warren man`,
# `warren completions`), then `cargo deb` with the metadata of the binary
# crate's Cargo.toml. Installs cargo-deb (from crates.io) when missing.
#
# The release profile uses fat LTO: about 8 minutes on 2 cores, nothing
# when the binary is up to date. NICE (default 10) is the build's niceness.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# The binary crate; its Cargo.toml has [package.metadata.deb].
crate=${WARREN_CRATE:-warren-command}

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb" >&2
    nice -n "${NICE:-10}" cargo install cargo-deb --locked >&2
fi

target=$(cargo metadata --format-version 1 --no-deps |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
echo "build-deb: building warren (release)" >&2
nice -n "${NICE:-10}" cargo build --release --locked -p "$crate" --bin warren >&2

# What the metadata's target/release/packaging/* assets name.
generated="$target/release/packaging"
rm -rf "$generated"
mkdir -p "$generated/completions"
"$target/release/warren" man "$generated/man" >/dev/null
# Debian compresses man pages (cargo-deb leaves files from target/ as they are).
gzip -9n "$generated"/man/*.1
"$target/release/warren" completions bash >"$generated/completions/warren.bash"
"$target/release/warren" completions zsh >"$generated/completions/_warren"
"$target/release/warren" completions fish >"$generated/completions/warren.fish"

echo "build-deb: packaging" >&2
cargo deb -p "$crate" --no-build --locked >&2
version=$(cargo metadata --format-version 1 --no-deps |
    grep -o '"name":"'"$crate"'","version":"[^"]*"' | cut -d'"' -f8)
deb="$target/debian/warren_${version}-1_amd64.deb"
test -f "$deb" || { echo "build-deb: $deb was not made" >&2; exit 1; }
echo "$deb"
