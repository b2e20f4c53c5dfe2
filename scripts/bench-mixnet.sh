#!/bin/bash
# The mixnet, measured: smolmix-vpn, the library's Tunnel and upstream smolmix through one
# local Nym network of real nym-nodes (scripts/localnet.sh), with the default and the fast
# traffic profile. One run, one table; the figures are printed whatever they are.
#
#  ns client (198.18.0.100)        mixnodes 198.18.0.11-13          ns inet (behind the gateway)
#  smolmix-vpn up · curl · ping    gateway 198.18.0.14 (real IPR)   HTTP 203.0.113.80, UDP echo
#  examples/mixnet_bench           directory 198.18.0.20            203.0.113.7, TCP sink
#  upstream smolmix_bench          counters read from ns directory  203.0.113.9:9000
#
# For each (implementation, profile): time from start to `connected`; round-trip p50/p95 (the
# VPN: ping; the libraries: UDP echo, one at a time); for each transfer (download and upload of
# 1 MB and 10 MB over one TCP connection) its time and the Sphinx packets it cost per MB:
#  - sphinx/MB: the client's own count of real packets, sent and received (the SDK's packet
#    statistics, which it logs every 2 s at debug level), retransmissions included;
#  - mixnodes/MB: the mixnodes' live counters (/api/v1/metrics/packets-stats,
#    forward_hop_packets_received, summed over the three and divided by three) over the
#    transfer, minus the same over an idle period of equal length right after it. Idle traffic
#    (Poisson cover, the gateway's own clients) is ~300 packets/s here, hence the subtraction,
#    and a real packet that takes a cover packet's slot does not show at all: a lower bound,
#    kept as the network's independent view. /api/v1/metrics/mixing refreshes only every 30 s.
#
#   sudo scripts/bench-mixnet.sh                         everything
#   sudo PROFILES=fast IMPLS="vpn library" SIZES=1 scripts/bench-mixnet.sh   a quick subset
#
# Upstream smolmix (the nym repository's smolmix/ at nym-binaries-v2026.9-venaco) can only be
# pointed at this network with a caller-built mixnet client, which it does not have: given a
# nym source tree in NYM_SRC, this script applies bench/upstream/smolmix-from-client.patch
# (that one change: IpMixStream::new_with_client and Tunnel::from_client), copies
# bench/upstream/smolmix_bench.rs into its examples and builds it (cargo, ~30 min the first
# time). SMOLMIX_UPSTREAM_BENCH may name an already built binary instead. Without either, the
# upstream rows are skipped.
set -e
REPO=$(cd "$(dirname "$0")/.." && pwd)
SMX_BIN=${SMX_BIN:-$REPO/target/release}
PROFILES=${PROFILES:-default fast}
IMPLS=${IMPLS:-vpn library upstream}
SIZES=${SIZES:-1 10}
PINGS=${PINGS:-20}
# A transfer still running after this long is reported as "timeout" (upstream smolmix needs
# minutes per MB) and that implementation's remaining transfers are skipped.
MAX_TRANSFER=${MAX_TRANSFER:-600}
[[ $(id -u) -eq 0 ]] || { echo "bench-mixnet.sh needs root (network namespaces): sudo $0" >&2; exit 1; }
for b in smolmix-vpn smolmix-directory examples/mixnet_bench; do
	[[ -x $SMX_BIN/$b ]] || { echo "missing $SMX_BIN/$b: cargo build --release --workspace --bins --examples" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/smx-bench.XXXXXX)
export LOCALNET_DIR=$TMP/localnet
VPN_PID=
cleanup() {
	set +e
	[[ -n $VPN_PID ]] && kill "$VPN_PID" 2>/dev/null && wait "$VPN_PID" 2>/dev/null
	"$REPO/scripts/localnet.sh" down >/dev/null 2>&1
	[[ -n ${KEEP_TMP:-} ]] || rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "[bench] $*" >&2; }

# --- upstream smolmix, built from NYM_SRC ---------------------------------------------------
upstream_bench() {
	if [[ -n ${SMOLMIX_UPSTREAM_BENCH:-} ]]; then echo "$SMOLMIX_UPSTREAM_BENCH"; return; fi
	[[ -n ${NYM_SRC:-} ]] || return 1
	local src=$NYM_SRC patch=$REPO/bench/upstream/smolmix-from-client.patch
	if ! grep -q 'fn new_with_client' "$src/sdk/rust/nym-sdk/src/ipr_wrapper/ip_mix_stream.rs"; then
		git -C "$src" apply "$patch" >&2
	fi
	cp "$REPO/bench/upstream/smolmix_bench.rs" "$src/smolmix/core/examples/smolmix_bench.rs"
	log "building upstream smolmix in $src (cargo build --release -p smolmix --example smolmix_bench)"
	(cd "$src" && cargo build --release --locked -p smolmix --example smolmix_bench >&2)
	echo "$src/target/release/examples/smolmix_bench"
}
UPSTREAM=
if [[ " $IMPLS " == *" upstream "* ]]; then
	UPSTREAM=$(upstream_bench) || { log "upstream smolmix skipped: set NYM_SRC (a nym tree at nym-binaries-v2026.9-venaco) or SMOLMIX_UPSTREAM_BENCH"; IMPLS=${IMPLS//upstream/}; }
fi

"$REPO/scripts/localnet.sh" up >&2
# shellcheck disable=SC1091
source "$LOCALNET_DIR/localnet.env"
C=$LOCALNET_NS_CLIENT
inc() { ip netns exec "$C" "$@"; }

# Packets that crossed the mixnet so far: each one crosses every layer once.
packets() {
	local sum=0 u n
	for u in "$LOCALNET_PACKETS_MIX1" "$LOCALNET_PACKETS_MIX2" "$LOCALNET_PACKETS_MIX3"; do
		n=$(ip netns exec "$LOCALNET_NS_DIRECTORY" curl -sf --max-time 5 "$u" |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["ingress_mixing"]["forward_hop_packets_received"])')
		sum=$((sum + n))
	done
	echo $((sum / 3))
}
now() { date +%s.%N; }
secs_since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }

# The client's own count of real Sphinx packets: the SDK logs its statistics every 2 s at debug
# level ("packets sent: N (real: R, cover: C, retransmissions: X)", "packets received: N,
# (real: R, …"), cumulative. Unlike the mixnodes' counters this sees real packets that took a
# cover packet's place in the Poisson stream. Prints "SENT RECEIVED RETRANSMISSIONS".
STATS_LOG=nym_statistics_common=debug
real_packets() {
	python3 - "$1" <<-'EOF'
	import re, sys
	s = r = x = 0
	for line in open(sys.argv[1], errors="replace"):
	    m = re.search(r"packets sent: \d+ \(real: (\d+), cover: \d+, retransmissions: (\d+)\)", line)
	    if m: s, x = int(m.group(1)), int(m.group(2))
	    m = re.search(r"packets received: \d+, \(real: (\d+)", line)
	    if m: r = int(m.group(1))
	print(s, r, x)
	EOF
}

# around LOG CMD...: runs CMD (one transfer) and echoes one cell, "SECONDS MIXNODE SENT RECEIVED
# RETRANSMISSIONS": the mixnodes' packets beyond those of an idle period of the same length
# just after it, and the client's real packets (from LOG) over the transfer and that period.
around() {
	local log=$1 p0 p1 p2 p3 t0 secs r0 r1; shift
	sleep 2.1; r0=$(real_packets "$log")   # the SDK's 2 s report is current
	p0=$(packets); t0=$(now)
	"$@" >&2 || return 1
	secs=$(secs_since "$t0"); p1=$(packets)
	p2=$(packets); sleep "$secs"; p3=$(packets)
	sleep 2.1; r1=$(real_packets "$log")
	set -- $r0 $r1
	echo "$secs $(( (p1 - p0) - (p3 - p2) )) $(($4 - $1)) $(($5 - $2)) $(($6 - $3))"
}

# The sizes' files and the sink; a transfer of $1 MB.
file_for() { [[ $1 == 1 ]] && echo mid.bin || echo big10.bin; }
sha_for() { [[ $1 == 1 ]] && echo "$LOCALNET_MID_SHA256" || echo "$LOCALNET_BIG_SHA256"; }

vpn_get() {
	inc curl -sS --max-time 900 -o "$TMP/got.bin" "http://$LOCALNET_HTTP_IP/$(file_for "$1")"
	[[ $(sha256sum <"$TMP/got.bin" | cut -d' ' -f1) == "$(sha_for "$1")" ]] || { log "download of $1 MB: wrong sha256"; return 1; }
}
vpn_put() {
	inc python3 - "$LOCALNET_SINK_IP" "$LOCALNET_SINK_PORT" $(( $1 * 1000000 )) <<-'EOF'
	import socket, sys
	s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=900)
	left, chunk = int(sys.argv[3]), bytes(i * 7 % 251 for i in range(16384))
	while left > 0:
	    n = min(left, len(chunk)); s.sendall(chunk[:n]); left -= n
	s.shutdown(socket.SHUT_WR)
	print("sink:", s.makefile().read().strip())
	EOF
}

# Two tables: per implementation and profile (connect, round trip), and per transfer (impl,
# profile, direction, MB, then around()'s cell or "failed", "timeout", "skipped").
ROWS=() TRANSFERS=()
row() { local IFS='|'; ROWS+=("$*"); log "row: $*"; }
transfer_row() { local IFS='|'; TRANSFERS+=("$*"); log "transfer: $*"; }

bench_vpn() {
	local profile=$1 args=(--nym-api "$NYM_API" --no-dns) t0 out p50 p95 stall
	[[ $profile == fast ]] && args+=(--traffic fast)
	: >"$TMP/vpn.out"
	t0=$(now)
	# Not through inc(): $! must be smolmix-vpn itself (ip netns exec and env exec it).
	ip netns exec "$C" env SMOLMIX_RUN_DIR="$TMP/run" RUST_LOG="error,smolmix=warn,$STATS_LOG" \
		"$SMX_BIN/smolmix-vpn" up "${args[@]}" >"$TMP/vpn.out" 2>"$TMP/vpn.err" &
	VPN_PID=$!
	until grep -q '^connected' "$TMP/vpn.out"; do
		kill -0 "$VPN_PID" 2>/dev/null || { log "vpn did not connect: $(tail -n 3 "$TMP/vpn.err")"; VPN_PID=; return 1; }
		sleep 0.05
	done
	local connect; connect=$(secs_since "$t0")
	out=$(inc ping -c "$PINGS" -i 0.5 -W 10 "$LOCALNET_HTTP_IP" | grep -o 'time=[0-9.]*' | cut -d= -f2 | sort -n)
	read -r p50 p95 < <(python3 -c 'import sys; v=[float(x) for x in sys.stdin.read().split()]; pct=lambda p: v[round((len(v)-1)*p)] if v else float("nan"); print(f"{pct(.5):.0f} {pct(.95):.0f}")' <<<"$out")
	for s in $SIZES; do
		transfer_row vpn "$profile" down "$s" "$(around "$TMP/vpn.err" vpn_get "$s" || echo failed)"
		transfer_row vpn "$profile" up "$s" "$(around "$TMP/vpn.err" vpn_put "$s" || echo failed)"
	done
	# The longest wait for any downlink after an uplink message (the session's own measure,
	# what the dead-exit verdict must stay above).
	stall=$(inc env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" status --json |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["session"]["longest_stall_ms"])' || echo -)
	kill "$VPN_PID"; wait "$VPN_PID" || true; VPN_PID=
	row vpn "$profile" "$connect" "$p50" "$p95" "$stall"
}

# The libraries: one stepped process (all downloads, then all uploads, as the program runs
# them); the script reads the counters around each step.
bench_lib() {
	local impl=$1 profile=$2 bin args line connect echo_line dir s
	bin=$SMX_BIN/examples/mixnet_bench
	[[ $impl == upstream ]] && bin=$UPSTREAM
	args=(--nym-api "$NYM_API" --ipr "$LOCALNET_IPR_ADDRESS" --stepped --echo "$LOCALNET_UDP_ECHO_IP:$LOCALNET_UDP_ECHO_PORT:$PINGS")
	[[ $profile == fast ]] && args+=(--traffic fast)
	for s in $SIZES; do args+=(--get "http://$LOCALNET_HTTP_IP/$(file_for "$s"):$TMP/$impl-$s.bin"); done
	for s in $SIZES; do args+=(--upload "$LOCALNET_SINK_IP:$LOCALNET_SINK_PORT:$((s * 1000000))"); done
	: >"$TMP/$impl.err"
	coproc LIB { exec ip netns exec "$C" env RUST_LOG="error,$STATS_LOG" "$bin" "${args[@]}" 2>"$TMP/$impl.err"; }
	next() { read -r -t "${1:-60}" line <&"${LIB[0]}" || { log "$impl: no output within ${1:-60} s ($(tail -n 2 "$TMP/$impl.err" | cut -c1-200))"; return 1; }; echo "$line" >&2; }
	go() { echo go >&"${LIB[1]}"; }
	step() { go; next "$MAX_TRANSFER"; }
	next || return 1; connect=${line#connected }
	next || return 1; go; next || return 1; echo_line=$line   # ready, echo
	local stopped=0 cell
	for dir in down up; do
		for s in $SIZES; do
			if ((stopped)); then transfer_row "$impl" "$profile" "$dir" "$s" skipped; continue; fi
			if next && cell=$(around "$TMP/$impl.err" step); then
				transfer_row "$impl" "$profile" "$dir" "$s" "$cell"
			else
				transfer_row "$impl" "$profile" "$dir" "$s" timeout; stopped=1; kill "$LIB_PID" 2>/dev/null
			fi
			if [[ $dir == down && $stopped == 0 ]] && [[ $(sha256sum <"$TMP/$impl-$s.bin" | cut -d' ' -f1) != "$(sha_for "$s")" ]]; then
				log "$impl: $s MB download has the wrong sha256"
			fi
		done
	done
	wait "$LIB_PID" 2>/dev/null || true
	set -- $echo_line
	row "$impl" "$profile" "$connect" "$3" "$4"
}

for profile in $PROFILES; do
	for impl in $IMPLS; do
		log "== $impl, $profile profile"
		case $impl in
			vpn) bench_vpn "$profile" || row vpn "$profile" failed ;;
			library | upstream) bench_lib "$impl" "$profile" || row "$impl" "$profile" failed ;;
		esac
	done
done

# Connect time against the Connect's reply SURBs: 4 (below the IPR's reserve of 10, what every
# message carried before) and 20 (now): the library's time to `connected`, CONNECT_RUNS each.
CONNECT=()
if [[ " $IMPLS " == *" library "* ]]; then
	for surbs in 4 20; do
		times=()
		for _ in $(seq "${CONNECT_RUNS:-5}"); do
			line=$(ip netns exec "$C" "$SMX_BIN/examples/mixnet_bench" --nym-api "$NYM_API" --ipr "$LOCALNET_IPR_ADDRESS" \
				--control-surbs "$surbs" 2>/dev/null | grep '^connected' || echo "connected nan")
			times+=("${line#connected }")
		done
		CONNECT+=("$surbs|${times[*]}")
		log "connect with $surbs SURBs on the Connect: ${times[*]}"
	done
fi

# The tables. Sphinx packets per MB: the client's real packets, sent and received, over the
# transfer (and the idle period after it); "mixnodes" is the same transfer seen by the mixnodes,
# beyond an equal idle period (it misses real packets that replaced Poisson cover).
{
	printf '%-9s %-8s %9s %6s %6s %15s\n' impl profile connect_s p50_ms p95_ms longest_stall_ms
	for r in "${ROWS[@]}"; do
		IFS='|' read -r -a f <<<"$r"
		[[ ${f[2]} == failed ]] && { printf '%-9s %-8s failed\n' "${f[0]}" "${f[1]}"; continue; }
		printf '%-9s %-8s %9.2f %6s %6s %15s\n' "${f[0]}" "${f[1]}" "${f[2]}" "${f[3]}" "${f[4]}" "${f[5]:--}"
	done
	printf '\n%-9s %-8s %-4s %3s %8s %6s %11s %9s %9s %7s %12s\n' impl profile dir MB seconds s/MB sphinx/MB sent/MB recv/MB retx mixnodes/MB
	for r in "${TRANSFERS[@]}"; do
		IFS='|' read -r -a f <<<"$r"
		read -r secs mix sent recv retx <<<"${f[4]}"
		if [[ -z $retx ]]; then printf '%-9s %-8s %-4s %3s %8s\n' "${f[0]}" "${f[1]}" "${f[2]}" "${f[3]}" "$secs"; continue; fi
		mb=${f[3]}
		printf '%-9s %-8s %-4s %3s %8.1f %6.1f %11d %9d %9d %7d %12d\n' "${f[0]}" "${f[1]}" "${f[2]}" "$mb" "$secs" \
			"$(python3 -c "print($secs / $mb)")" $(((sent + recv) / mb)) $((sent / mb)) $((recv / mb)) "$retx" $((mix / mb))
	done
	if ((${#CONNECT[@]})); then
		printf '\n%-14s %9s  %s\n' connect_surbs median_s "runs (s)"
		for r in "${CONNECT[@]}"; do
			IFS='|' read -r n t <<<"$r"
			printf '%-14s %9s  %s\n' "$n" "$(python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.2f}")' $t)" "$t"
		done
	fi
} | tee "${BENCH_OUT:-/dev/null}"
