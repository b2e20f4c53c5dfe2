#!/bin/bash
# Fail closed, always: the kill switch, one instance, a hostile exit's MTU, root-owned state and
# exec's environment, each tried the way an attacker or a crash would, against smolmix-exit.
#
#  ns client                         ns exit                                ns inet
#  smolmix-vpn up ─ smx0             smolmix-exit --listen 198.51.100.1     http :80, dnsmasq :53
#  curl --interface vc (the probe)   :51820 plain; :51821 slow or lying    udp echo :7
#  vc 198.51.100.2 ───────────────── ve 198.51.100.1 · vi 192.0.2.1 ─────── vo 192.0.2.2
#     2001:db8:2::2                     2001:db8:2::1     2001:db8:1::1        2001:db8:1::2
#  nft (ns client) "smxleak": counter "out" counts every packet leaving vc except the
#  transport's own UDP to 198.51.100.1 and IPv6 neighbour discovery / MLD; "out6" counts IPv6.
#
# A program bound to the physical interface (`curl --interface vc`) skips every route whose
# device is another one, our table's `dev smx0` included, and falls through to main: routing
# alone lets it out. The kill switch (an nftables table) is what stops it; the positive control
# deletes that table while up runs and sees the same probe leave.
#
# Each check prints "ok N - …" or "not ok N - …"; "  # …" lines say what was measured.

set -e
exec 3>&1
CURRENT_SUITE=reliability
source "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d /tmp/smx-reliability.XXXXXX)
trap cleanup_all EXIT
note() { echo "  # $*" >&3; }
setup_topology "smx-rl-$$"
setup_exit_nat
start_exit nymtun0 51820
start_inet

# The leak counter: everything leaving vc except the transport and neighbour discovery.
n "$c" nft -f - <<-'EOF'
table inet smxleak {
	counter out { }
	counter out6 { }
	chain post {
		type filter hook postrouting priority 100; policy accept;
		oifname != "vc" return
		ip daddr 198.51.100.1 udp dport { 51820, 51821 } return
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report } return
		meta nfproto ipv6 counter name out6
		counter name out
	}
}
EOF
leaked() { n "$c" nft -j list counter inet smxleak "${1:-out}" | python3 -c 'import json,sys; print([o["counter"]["packets"] for o in json.load(sys.stdin)["nftables"] if "counter" in o][0])'; }
reset_counters() { n "$c" nft reset counters table inet smxleak >/dev/null; }
snapshot() { { n "$c" ip rule; n "$c" ip -6 rule; n "$c" ip route show table all; n "$c" ip -6 route show table all; n "$c" nft list ruleset; } 2>&1 | grep -Ev 'expires|packets [0-9]+ bytes [0-9]+' ; }
probe() { n "$c" curl -sS --max-time 3 --interface vc -o /dev/null -w '%{http_code}' "$@" 2>/dev/null; }

BEFORE=$TMP/before.txt
snapshot >"$BEFORE"

pretty "$c" "positive control: without a tunnel the probe leaves by vc and the counter sees it"
reset_counters
code=$(probe http://192.0.2.2/ || true)
note "curl --interface vc: HTTP $code; counter out: $(leaked) packets"
check "positive control: the direct probe reaches the server" test "$code" = 200
check "positive control: the counter sees it" test "$(leaked)" -gt 0

pretty "$c" "kill switch: up, then a program bound to the physical interface"
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
check "the kill switch table is in place" n "$c" nft list table inet smolmix_killswitch
reset_counters
code=$(probe http://192.0.2.2/ || true)
code6=$(probe 'http://[2001:db8:1::2]/' || true)
n "$c" ping -c 2 -W 1 -I vc 192.0.2.2 >/dev/null 2>&1 || true
n "$c" dig +time=1 +tries=1 -b 198.51.100.2 @192.0.2.2 smolmix.test >/dev/null 2>&1 || true
note "curl --interface vc: HTTP ${code:-none}, over IPv6: ${code6:-none}; ping -I vc, dig -b 198.51.100.2; counter out: $(leaked)"
check "bound to vc, curl, curl -6, ping and dig get nowhere: 0 packets left by vc" test "$(leaked)" -eq 0
check "the kill switch counted what it refused" sh -c "ip netns exec $c nft list chain inet smolmix_killswitch output | grep -q 'counter packets [1-9]'"
check "the tunnel itself still works" sh -c "[ \$(ip netns exec $c curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://192.0.2.2/mid.bin) = 200 ]"
n "$c" nft delete table inet smolmix_killswitch
reset_counters
code=$(probe http://192.0.2.2/ || true)
note "kill switch table deleted by hand while up runs: curl --interface vc: HTTP $code, counter out: $(leaked)"
check "positive control: without the table, the same probe leaves by vc (routing alone does not stop it)" test "$(leaked)" -gt 0
stop_client || true
wait_for 5 sh -c "! ip netns exec $c ip link show smx0"

pretty "$c" "SIGKILL: the kill switch outlives up, until down"
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
kill -9 "$CLIENT_PID"; wait "$CLIENT_PID" 2>/dev/null || true
wait_for 5 sh -c "! ip netns exec $c ip link show smx0"
reset_counters
probe http://192.0.2.2/ >/dev/null || true
n "$c" curl -sS --max-time 2 -o /dev/null http://192.0.2.2/ 2>/dev/null || true
n "$c" curl -sS --max-time 2 -o /dev/null 'http://[2001:db8:1::2]/' 2>/dev/null || true
note "after SIGKILL, curl (bound to vc and not), curl -6: counter out $(leaked)"
check "after SIGKILL nothing leaves by vc" test "$(leaked)" -eq 0
check "down exits 0" n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" down
snapshot >"$TMP/after.txt"
check "after down: rules, routes and nftables byte-identical to before up" diff "$BEFORE" "$TMP/after.txt"

pretty "$c" "one instance: a second up while the first connects"
# A 1 s one-way delay keeps the first up connecting for 2 s, long enough to try a second one.
# (One exit at a time: each allocates from 10.0.0.0/16, routed to its own TUN.)
stop_exit nymtun0
start_exit nymtun0 51821 --delay-ms 1000
: >"$TMP/client.out"
# Not through n(): $! must be smolmix-vpn itself (ip netns exec and env exec it).
ip netns exec "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" up --ipr udp://198.51.100.1:51821 --dns 192.0.2.2 >"$TMP/client.out" 2>"$TMP/client.err" &
CLIENT_PID=$!
check "status says connecting while the first up waits for the exit" wait_for 2 sh -c "[ \"\$(ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn status | head -1)\" = 'state: connecting' ]"
rc=0
out=$(n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" up --ipr udp://198.51.100.1:51820 --tun smx1 2>&1) || rc=$?
note "second up: exit status $rc: $out"
check "the second up is refused, naming the running one" sh -c "[ $rc -ne 0 ] && echo '$out' | grep -q 'already running (pid $CLIENT_PID)'"
check "the second up created nothing" sh -c "! ip netns exec $c ip link show smx1"
check "the first one connects anyway" wait_for 30 grep -q '^connected' "$TMP/client.out"
note "the first up: $(grep '^connected' "$TMP/client.out")"
check "and carries traffic" sh -c "[ \$(ip netns exec $c curl -sS --max-time 30 -o /dev/null -w '%{http_code}' http://192.0.2.2/) = 200 ]"
check "SIGTERM: the first up exits 0" stop_client
stop_exit nymtun0

pretty "$c" "a hostile exit announces MTU 1200 (below IPv6's 1280)"
start_exit nymtun0 51821 --announce-mtu 1200
start_client --ipr udp://198.51.100.1:51821 --dns 192.0.2.2
mtu=$(n "$c" cat /sys/class/net/smx0/mtu)
note "announced 1200; smx0 mtu $mtu; $(grep -o 'mtu [0-9]*' "$TMP/client.out" | head -1) in up's line"
check "the MTU is clamped to 1280" test "$mtu" = 1280
check "IPv6 stays on the TUN (its route is there)" sh -c "ip netns exec $c ip -6 route show table 29549 | grep -q 'default dev smx0'"
reset_counters
code6=$(n "$c" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' 'http://[2001:db8:1::2]/mid.bin' 2>/dev/null || true)
note "curl -6 through the tunnel: HTTP $code6; IPv6 packets on vc: $(leaked out6)"
check "IPv6 goes through the tunnel: HTTP 200 and 0 IPv6 packets on vc" sh -c "[ '$code6' = 200 ] && [ $(leaked out6) -eq 0 ]"
stop_client || true
stop_exit nymtun0
start_exit nymtun0 51820
reset_counters
n "$c" curl -sS --max-time 3 -o /dev/null 'http://[2001:db8:1::2]/' 2>/dev/null || true
check "positive control: without the tunnel the counter sees IPv6 on vc" test "$(leaked out6)" -gt 0

pretty "$c" "root-owned state"
ln -s "$TMP/run" "$TMP/run-link"
rc=0
out=$(n "$c" env SMOLMIX_RUN_DIR="$TMP/run-link" "$SMX_BIN/smolmix-vpn" up --ipr udp://198.51.100.1:51820 2>&1) || rc=$?
note "SMOLMIX_RUN_DIR a symlink: exit status $rc: $out"
check "a symlinked run dir is refused" sh -c "[ $rc -ne 0 ] && echo '$out' | grep -q 'symbolic link'"
mkdir -m 0777 "$TMP/run-open"
rc=0
out=$(n "$c" env SMOLMIX_RUN_DIR="$TMP/run-open" "$SMX_BIN/smolmix-vpn" down 2>&1) || rc=$?
note "a world-writable run dir: down exit status $rc: $out"
check "a run dir others can write is refused, even by down" sh -c "[ $rc -ne 0 ] && echo '$out' | grep -q 'written by others'"
check "the run dir is 0700" test "$(stat -c %a "$TMP/run")" = 700
snapshot >"$TMP/after2.txt"
check "rules, routes and nftables byte-identical to the start" diff "$BEFORE" "$TMP/after2.txt"

finish
