#!/bin/bash
# Throughput and latency of the client through the local exit, measured with iperf3 and ping.
#
#  ns client                       ns exit                               ns inet
#  iperf3 -c, ping                 smolmix-exit --listen 198.51.100.1    iperf3 -s
#  smolmix-vpn up ─ smx0           nymtun0 10.0.0.1/16                   192.0.2.2
#  vc 198.51.100.2 ─────────────── ve 198.51.100.1 · vi 192.0.2.1 ────── vo 192.0.2.2
#
# Latency: the IPR double flushes lone downlink packets after --flush-ms (20 ms, like the real
# IPR), so the client's own cost is measured against an exit flushing every 1 ms and compared
# with a plain ping of the exit over the veth. Impairments (e.g. EXIT_ARGS="--delay-ms 100
# --loss 0.01") model the mixnet. Usage: sudo scripts/bench.sh [seconds]
set -e
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "bench.sh needs root: sudo $0" >&2; exit 1; }
secs=${1:-10}
[[ -n ${NO_BUILD:-} ]] || cargo build --release --locked --bins >/dev/null
exec 3>&1
CURRENT_SUITE=bench
source netns-tests/lib.sh
TMP=$(mktemp -d /tmp/smx-bench.XXXXXX)
trap cleanup_all EXIT
setup_topology "smx-bench-$$"
setup_exit_nat
# shellcheck disable=SC2086
start_exit nymtun0 51820 --flush-ms 1 ${EXIT_ARGS:-}
start_client --ipr udp://198.51.100.1:51820 --no-dns
iperf() {
	ip netns exec "$i" iperf3 -s -1 -B 192.0.2.2 >/dev/null 2>&1 &
	wait_for 5 sh -c "ip netns exec '$i' ss -Htln | grep -q ':5201'"
	n "$c" iperf3 -c 192.0.2.2 -t "$secs" -J "$@" | python3 -c '
import json, sys
r = json.load(sys.stdin)["end"]
gbit = r["sum_received"]["bits_per_second"] / 1e9
retr = r["sum_sent"].get("retransmits", 0)
print(f"{gbit:.2f} Gbit/s, {retr} retransmits")'
}
pretty "$c" "TCP upload (client → inet), $secs s: $(iperf)"
pretty "$c" "TCP download (inet → client), $secs s: $(iperf -R)"
rtt() { n "$c" ping -q -c 50 -i 0.02 "$1" | awk -F/ '/^rtt/ {print $5 " ms avg, " $7 " mdev"}'; }
pretty "$c" "ping exit over the veth (baseline):        $(rtt 198.51.100.1)"
pretty "$c" "ping inet through the tunnel (flush 1 ms): $(rtt 192.0.2.2)"
stop_client
