#!/bin/bash
# The one test command: installs what is missing, checks that every docs/ citation points at a
# heading, that the layers import only what they may (check-layers.sh), that the code is
# formatted and lint-free (clippy -D warnings), builds, packages and inspects the .deb
# (package.sh), builds the library in a fresh project without our lock, runs the unit and integration tests (cargo's summary lines), then the
# privileged end-to-end suites in network namespaces.
#
#   sudo scripts/test.sh            everything
#   SKIP_NETNS=1 scripts/test.sh    only the unprivileged cargo tests
set -e
cd "$(dirname "$0")/.."
if [[ $(id -u) -eq 0 ]]; then scripts/deps.sh; fi
scripts/check-refs.sh
scripts/check-layers.sh
# Formatting is part of the build (rustfmt.toml): a diff fails here, before the long build.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo fmt --all --check
echo "cargo fmt --check: ok"
# Lints are part of the build too: every warning (missing docs included) fails here.
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "cargo clippy: ok"

# One profile for everything: the netns suites need an optimised client to move 20 MB and
# 50 connections quickly, and sharing the release build means nym-sdk compiles once.
# --workspace: the directory stand-in (localnet/directory) is a member of its own, for the
# mixnet suite, and its tests decode what it serves with the published nym-api types.
echo "== cargo build --release --workspace"
cargo build --release --locked --workspace --bins --examples
# The .deb from these release binaries: its files and dependencies, installed into a scratch
# root, where the man page renders, bash completes and the systemd unit verifies.
echo "== scripts/package.sh"
scripts/package.sh
# A program that depends on the library gets no Cargo.lock of ours: resolve one afresh, check
# its nym-* versions, build it (netns-tests/library.sh runs it against the local exit).
echo "== scripts/fresh-dependent.sh (the library in a new project, without our Cargo.lock)"
scripts/fresh-dependent.sh
echo "== cargo test --release --workspace"
cargo test --release --locked --workspace 2>&1 | tee /tmp/smolmix-cargo-test.log
status=${PIPESTATUS[0]}
[[ $status -eq 0 ]] || exit "$status"

if [[ -n ${SKIP_NETNS:-} ]]; then
	echo "SKIP_NETNS set: network-namespace suites not run"
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "the network-namespace suites need root: run sudo scripts/test.sh" >&2
	exit 1
fi
exec netns-tests/run.sh
