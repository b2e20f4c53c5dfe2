#!/bin/bash
# The whole data path, end to end: unmodified programs in ns client reach servers in ns inet
# through smolmix-vpn → udp transport → smolmix-exit (the IPR double) → forwarding + NAT.
#
#  ns client                        ns exit                               ns inet
#  curl, dig, ping, python          smolmix-exit --listen 198.51.100.1    http :80, dnsmasq :53,
#  smolmix-vpn up ─ smx0            nymtun0 10.0.0.1/16, fc00::1/112      udp echo :7
#  vc 198.51.100.2 ──────────────── ve 198.51.100.1 · vi 192.0.2.1 ────── vo 192.0.2.2
#                                                     2001:db8:1::1         2001:db8:1::2
#
# Each check prints "ok N - …" or "not ok N - …"; the last line is "N passed, N failed".

set -e
exec 3>&1
CURRENT_SUITE=datapath
source "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d /tmp/smx-datapath.XXXXXX)
trap cleanup_all EXIT
setup_topology "smx-dp-$$"
setup_exit_nat
start_exit nymtun0 51820
start_inet

t_status_connected() { client_status | grep -q '"state": "connected"'; }
t_v10_mtu() { grep -q 'IPR v10' "$TMP/client.out" && grep -q 'mtu 1500' "$TMP/client.out"; }
t_routes() {
	n "$c" ip route show table 29549 | grep -q 'default dev smx0' &&
	n "$c" ip -6 route show table 29549 | grep -q 'default dev smx0'
}
# The transport's socket carries mark 0x736d: that mark, not the exit's address, leads outside.
t_exit_outside() { n "$c" ip route get 198.51.100.1 mark 0x736d | grep -q 'dev vc' && n "$c" ip route get 198.51.100.1 | grep -q 'dev smx0'; }
t_curl_big() {
	local want got
	want=$(sha256sum <"$TMP/www/big.bin" | cut -d' ' -f1)
	got=$(n "$c" curl -sS --max-time 120 http://192.0.2.2/big.bin | sha256sum | cut -d' ' -f1)
	[[ $want == "$got" ]]
}
t_curl_v6() {
	local want got
	want=$(sha256sum <"$TMP/www/mid.bin" | cut -d' ' -f1)
	got=$(n "$c" curl -sS --max-time 60 'http://[2001:db8:1::2]/mid.bin' | sha256sum | cut -d' ' -f1)
	[[ $want == "$got" ]] && grep -q '^2001:db8:1::1 ' "$TMP/http6.log" && ! grep '"GET ' "$TMP/http6.log" | grep -qv '^2001:db8:1::1 '
}
t_dig_udp() { [[ $(n "$c" dig +short +time=2 +tries=2 @192.0.2.2 smolmix.test A) == 192.0.2.80 ]]; }
t_dig_tcp() { [[ $(n "$c" dig +tcp +short +time=2 +tries=2 @192.0.2.2 smolmix.test AAAA) == 2001:db8:1::80 ]]; }
t_udp_big() {
	n "$c" python3 -c '
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
msg = os.urandom(4000)
s.sendto(msg, ("192.0.2.2", 7))
data, _ = s.recvfrom(65535)
assert data == msg, (len(data), len(msg))'
}
t_fifty() {
	local args=() k
	for k in $(seq 50); do args+=(-o /dev/null "http://192.0.2.2/mid.bin?$k"); done
	n "$c" curl -sS --max-time 120 --parallel --parallel-immediate --parallel-max 50 \
		-w '%{http_code} %{size_download}\n' "${args[@]}" >"$TMP/fifty.out"
	[[ $(grep -c '^200 1000000$' "$TMP/fifty.out") -eq 50 ]]
}
t_only_exit_seen() {
	grep -q '^192.0.2.1 ' "$TMP/http.log" &&
	! grep '"GET ' "$TMP/http.log" | grep -qv '^192.0.2.1 ' &&
	grep -q '^192.0.2.1 ' "$TMP/udpecho.log" &&
	! grep -qv '^192.0.2.1 ' "$TMP/udpecho.log"
}
session_bad_count() {
	client_status | python3 -c '
import json, sys
s = json.load(sys.stdin)["counters"]["session"]
print(sum(s[k] for k in ("non_lp_in", "foreign_stream_in", "malformed_in", "empty_frames_in", "truncated_bundles_in", "version_mismatch_in")))'
}
t_garbage() {
	local port before after
	port=$(n "$c" ss -Hunp | grep smolmix-vpn | grep -o '198\.51\.100\.2:[0-9]*' | head -1 | cut -d: -f2)
	before=$(session_bad_count)
	n "$e" python3 "$(dirname "$0")/spoof_garbage.py" 198.51.100.1 51820 198.51.100.2 "$port" 300
	n "$c" ping -c 2 -i 0.2 -W 2 192.0.2.2 &&
	wait_for 5 counted_since "$before" 300    # the status file is refreshed once a second
}
counted_since() { (( $(session_bad_count) - $1 >= $2 )); }
t_rules_left() { n "$c" ip rule show | grep -q 'lookup 29549'; }
vpn() { n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" "$@"; }
t_no_root() {
	# setpriv execs the binary itself: a program it started (env) could not reach a clone
	# under a 0700 directory (mktemp -d) once the uid change has dropped every capability.
	! n "$c" env SMOLMIX_RUN_DIR="$TMP/run-nobody" setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$SMX_BIN/smolmix-vpn" up --ipr udp://198.51.100.1:51820 --no-dns 2>"$TMP/noroot.err" &&
	grep -qi 'root' "$TMP/noroot.err"
}
# An exit that does not answer: within 30 s one line naming it and saying that the host is
# blocked meanwhile; up keeps trying (the exit may come back) until SIGTERM, which ends it with
# status 0 and the host as it was.
t_no_answer() {
	local pid rc=0
	# Not through vpn(): $! must be smolmix-vpn itself (ip netns exec and env exec it).
	ip netns exec "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" up --ipr udp://198.51.100.1:9 --no-dns 2>"$TMP/noanswer.err" &
	pid=$!
	wait_for 30 grep -q 'udp://198.51.100.1:9' "$TMP/noanswer.err" || { kill "$pid"; wait "$pid"; return 1; }
	local said=0
	grep -q 'blocked' "$TMP/noanswer.err" && [[ $(wc -l <"$TMP/noanswer.err") -eq 1 ]] && kill -0 "$pid" || said=1
	kill -TERM "$pid"; wait "$pid" || rc=$?
	[[ $said -eq 0 && $rc -eq 0 ]]
}
t_bad_options() {
	local bad
	for bad in '--route nonsense' '--exclude 0.0.0.0/0' '--mtu 99' '--tun this-name-is-far-too-long' '--ipr tcp://x:1'; do
		# shellcheck disable=SC2086
		if vpn up --ipr udp://198.51.100.1:51820 $bad 2>/dev/null; then return 1; fi
	done
}

pretty "$c" "smolmix-vpn up against the v10 exit"
start_client --ipr udp://198.51.100.1:51820 --no-dns
check "up prints a line starting with 'connected'" grep -q '^connected' "$TMP/client.out"
check "status --json reports connected" t_status_connected
check "negotiated IPR v10 and the exit's MTU" t_v10_mtu
check "default routes (v4 and v6) point into smx0 via our table" t_routes
check "the transport's mark routes outside the tunnel; the exit's address without it goes in" t_exit_outside

pretty "$c" "unmodified programs through the tunnel"
check "curl: 20 MB over HTTP, sha256 matches" t_curl_big
check "curl over IPv6: 1 MB, sha256 matches, the server sees the exit's IPv6 address" t_curl_v6
check "dig over UDP resolves through the tunnel" t_dig_udp
check "dig over TCP resolves through the tunnel" t_dig_tcp
check "ping (IPv4) gets replies" n "$c" ping -c 3 -i 0.2 -W 2 192.0.2.2
check "ping -6 gets replies" n "$c" ping -6 -c 3 -i 0.2 -W 2 2001:db8:1::2
check "a 4000-byte UDP datagram (fragmented by the kernel) arrives whole and comes back" t_udp_big
check "the echo server received it as one 4000-byte datagram" grep -q ' 4000$' "$TMP/udpecho.log"
check "50 TCP connections at once all complete" t_fifty
check "servers saw only the exit's address, never the client's" t_only_exit_seen

pretty "$c" "bad input never crashes anything"
check "300 garbage datagrams from the exit's address: dropped, counted, tunnel still works" t_garbage
check "the client process survived the garbage" kill -0 "$CLIENT_PID"

pretty "$c" "clean stop"
check "SIGTERM stops the client with exit status 0" stop_client
check "every route, rule, address and device is restored" host_is_clean

pretty "$c" "v9 fallback: an exit that ignores v10"
stop_exit nymtun0
start_exit nymtun0 51829 --max-version 9
start_client --ipr udp://198.51.100.1:51829 --no-dns
check "connected with IPR v9 after the v10 attempt timed out" grep -q 'IPR v9' "$TMP/client.out"
check "ping through the v9 session" n "$c" ping -c 2 -i 0.2 -W 2 192.0.2.2
check "SIGTERM after v9 also exits 0" stop_client
check "host restored after the v9 run" host_is_clean
stop_exit nymtun0
start_exit nymtun0 51820

pretty "$c" "crash recovery: the journal undoes what a killed client left"
start_client --ipr udp://198.51.100.1:51820 --no-dns
kill -KILL "$CLIENT_PID"; wait "$CLIENT_PID" 2>/dev/null || true
check "after SIGKILL our rules are still there (positive control)" t_rules_left
check "smolmix-vpn down undoes them" vpn down
check "host restored after down" host_is_clean
check "down is idempotent" vpn down
start_client --ipr udp://198.51.100.1:51820 --no-dns
kill -KILL "$CLIENT_PID"; wait "$CLIENT_PID" 2>/dev/null || true
check "up after a crash starts clean and connects" start_client --ipr udp://198.51.100.1:51820 --no-dns
check "ping after recovery" n "$c" ping -c 2 -i 0.2 -W 2 192.0.2.2
check "stop after recovery exits 0" stop_client
check "host restored after recovery" host_is_clean

pretty "$c" "clear errors"
check "up without root says so" t_no_root
check "an exit that does not answer: within 30 s one clear line naming it and the blocked host; SIGTERM ends it" t_no_answer
check "host untouched after the failed connect" host_is_clean
check "invalid options are rejected" t_bad_options
check "host untouched after the rejected options" host_is_clean

finish
