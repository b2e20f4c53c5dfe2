#!/bin/bash
# A program that depends on the library, built as a stranger would build it: a new cargo
# project, `cargo add smolmix-vpn --path <repo> --no-default-features --features mixnet` (the
# library and the Nym transport, no VPN), a main.rs that is examples/tcp.rs's code path (a
# Tunnel to an exit, one HTTP GET over tcp_connect), and no Cargo.lock of ours: cargo resolves
# every version afresh. Checks that the fresh lock holds each nym-* crate at the version our
# Cargo.lock has (1.21.6; nym-sdk 1.21.6 builds with nothing else, docs/design.md §7), builds
# the program (dev profile without debug info: nearly every crate resolves to a newer release
# than ours, so this is a second build of the whole tree, and an unoptimised one takes half the
# time), and prints its path as the last line.
#
#   scripts/fresh-dependent.sh                     build; the binary is target/debug/smolmix-fresh-dependent
#   CARGO_TARGET_DIR=DIR scripts/fresh-dependent.sh    build into DIR (default: the repo's target/,
#                                                  so crates resolved as in our lock are reused)
#   FRESH_DIR=DIR scripts/fresh-dependent.sh       make the project in DIR (kept; default: a temp
#                                                  dir, removed at the end)
#   FRESH_NO_BUILD=1 scripts/fresh-dependent.sh    resolve and check the lock only
#
# The program, as netns-tests/library.sh runs it:
#   smolmix-fresh-dependent udp://HOST:PORT|NYM_ADDRESS http://IP[:PORT]/PATH [OUTPUT]
# prints "HTTP <status>: <bytes> bytes in <secs> s via <exit>", writes the body to OUTPUT if
# given, and exits 0 on a 2xx answer.
set -e
REPO=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
NAME=smolmix-fresh-dependent
if [[ -n ${FRESH_DIR:-} ]]; then
	rm -rf "$FRESH_DIR"
	mkdir -p "$FRESH_DIR"
	dir=$FRESH_DIR
else
	dir=$(mktemp -d /tmp/smx-fresh.XXXXXX)
	trap 'rm -rf "$dir"' EXIT
fi
cd "$dir"

echo "== a new project in $dir, depending on $REPO without its Cargo.lock"
# --vcs none: no git repository of its own; [workspace]: not a member of any workspace above it.
cargo init --quiet --vcs none --bin --name "$NAME"
# No debug info: the build is a check that it compiles and runs, not a program to debug.
printf '\n[workspace]\n\n[profile.dev]\ndebug = false\n' >>Cargo.toml
cargo add --quiet smolmix-vpn --path "$REPO" --no-default-features --features mixnet
cargo add --quiet tokio --features rt-multi-thread,macros
cargo add --quiet hyper --features client,http1
cargo add --quiet hyper-util --features tokio
cargo add --quiet http-body-util bytes
cat >src/main.rs <<'EOF'
//! examples/tcp.rs's code path in a program of its own that only has the library: a Tunnel to
//! the exit, then one HTTP/1.1 GET with hyper over `Tunnel::tcp_connect`.
//!
//!     smolmix-fresh-dependent udp://HOST:PORT|NYM_ADDRESS http://IP[:PORT]/PATH [OUTPUT]

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{header, Request, Uri};
use hyper_util::rt::TokioIo;
use smolmix::{IprAddr, Tunnel};

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ipr, url, rest @ ..] = args.as_slice() else {
        return Err("usage: smolmix-fresh-dependent udp://HOST:PORT|NYM_ADDRESS http://IP[:PORT]/PATH [OUTPUT]".into());
    };
    let ipr: IprAddr = ipr.parse()?;
    let url: Uri = url.parse()?;
    let host = url.host().ok_or("the URL has no host")?;
    let ip: IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse()?;
    let addr = SocketAddr::new(ip, url.port_u16().unwrap_or(80));
    let authority = url.authority().map(|a| a.to_string()).unwrap_or_default();
    let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();

    let tunnel = Tunnel::builder().ipr(ipr).build().await?;
    let started = Instant::now();
    let result = async {
        let stream = tunnel.tcp_connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let req = Request::get(path).header(header::HOST, authority).body(Empty::<Bytes>::new())?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        drop(sender);
        let _ = conn.await;
        Ok::<_, Error>((status, body))
    }
    .await;
    let exit = tunnel.exit().to_string();
    tunnel.shutdown().await;
    let (status, body) = result?;
    if let Some(output) = rest.first() {
        std::fs::write(output, &body)?;
    }
    println!("HTTP {}: {} bytes in {:.2} s via {exit}", status.as_u16(), body.len(), started.elapsed().as_secs_f64());
    if !status.is_success() {
        std::process::exit(1);
    }
    Ok(())
}
EOF
# `cargo add` already resolved once; start from nothing, as `cargo build` in a fresh clone would.
rm -f Cargo.lock
cargo generate-lockfile --quiet
echo "ok - cargo resolved a fresh Cargo.lock ($(grep -c '^name = ' Cargo.lock) packages)"

# "name version" of every nym-* package in a Cargo.lock.
nym_versions() { awk '/^\[\[package\]\]/ {n = ""} /^name = "nym-/ {n = $3} /^version = / && n != "" {print n, $3; n = ""}' "$1" | tr -d '"' | sort -u; }
ours=$(nym_versions "$REPO/Cargo.lock")
fresh=$(nym_versions Cargo.lock)
# Our own lock first: every nym-* at 1.21.6, but nym-bls12_381-fork, which has versions of its own.
bad=$(awk '$1 != "nym-bls12_381-fork" && $2 != "1.21.6"' <<<"$ours")
[[ -z $bad ]] || { echo "not ok - our Cargo.lock has nym-* crates off 1.21.6:" >&2; echo "$bad" >&2; exit 1; }
[[ -n $fresh ]] || { echo "not ok - no nym-* package in the fresh Cargo.lock" >&2; exit 1; }
bad=$(grep -vxF -f <(printf '%s\n' "$ours") <<<"$fresh" || true)
if [[ -n $bad ]]; then
	echo "not ok - the fresh Cargo.lock moves nym-* crates off our versions (pin them =1.21.6 in Cargo.toml):" >&2
	echo "$bad" | while read -r n v; do echo "  $n $v (ours: $(awk -v n="$n" '$1 == n {print $2}' <<<"$ours"))"; done >&2
	exit 1
fi
echo "ok - all $(wc -l <<<"$fresh") nym-* packages of the fresh Cargo.lock are at our versions (1.21.6; nym-bls12_381-fork $(awk '$1 == "nym-bls12_381-fork" {print $2}' <<<"$fresh"))"

if [[ -n ${FRESH_NO_BUILD:-} ]]; then
	echo "FRESH_NO_BUILD set: not built"
	[[ -z ${FRESH_DIR:-} ]] || echo "$dir"
	exit 0
fi
echo "== cargo build (target dir $CARGO_TARGET_DIR)"
cargo build
bin=$CARGO_TARGET_DIR/debug/$NAME
[[ -x $bin ]] || { echo "not ok - $bin was not built" >&2; exit 1; }
usage=$("$bin" 2>&1 || true)
[[ $usage == *usage:* ]] || { echo "not ok - $bin without arguments does not print its usage: $usage" >&2; exit 1; }
echo "ok - built $NAME; it runs"
echo "$bin"
