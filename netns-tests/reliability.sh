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

pretty "$c" "the transport leaves by its mark, not by its peer's address"
# A gateway's operator publishes the addresses we would exempt; one who published 9.9.9.9
# would have pulled every DNS query out of the tunnel. Stand-in: the exit's own address. Only
# the transport's marked socket may reach it directly; anything else goes into the tunnel.
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
rules=$(n "$c" ip rule; n "$c" ip -6 rule)
note "rules: $(echo "$rules" | grep -E '5208|5209' | tr -s ' \t' ' ' | paste -sd ';')"
check "one rule per family exempts the mark, none an address" sh -c "[ \$(echo '$rules' | grep -c 'fwmark 0x736d lookup main') = 2 ] && ! echo '$rules' | grep -q 'to 198.51.100.1'"
check "the kill switch exempts the mark, no address" sh -c "ip netns exec $c nft list table inet smolmix_killswitch | grep -q 'meta mark 0x0000736d accept' && [ -z \"\$(ip netns exec $c nft -j list set inet smolmix_killswitch exempt4 | grep -o '\"elem\"')\" ]"
check "src_valid_mark is on while up runs" test "$(n "$c" sysctl -n net.ipv4.conf.all.src_valid_mark)" = 1
reset_counters
n "$c" curl -sS --max-time 3 -o /dev/null http://198.51.100.1:8080/ 2>/dev/null || true
n "$c" dig +time=1 +tries=1 @198.51.100.1 smolmix.test >/dev/null 2>&1 || true
note "curl http://198.51.100.1:8080/ and dig @198.51.100.1 from an ordinary program: counter out $(leaked)"
check "a program other than the transport cannot reach the exit's address directly: 0 packets on vc" test "$(leaked)" -eq 0
check "the tunnel carries traffic meanwhile" sh -c "[ \$(ip netns exec $c curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://192.0.2.2/mid.bin) = 200 ]"
stop_client
check "after stop, src_valid_mark is back to 0" test "$(n "$c" sysctl -n net.ipv4.conf.all.src_valid_mark)" = 0
reset_counters
n "$c" curl -sS --max-time 3 -o /dev/null http://198.51.100.1:8080/ 2>/dev/null || true
check "positive control: without the tunnel the same probe is counted" test "$(leaked)" -gt 0

pretty "$c" "strict reverse-path filtering (rp_filter=1): the transport's replies keep their mark"
n "$c" sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.vc.rp_filter=1
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
code=$(n "$c" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://192.0.2.2/mid.bin 2>/dev/null || true)
note "rp_filter=1 on all and vc: curl through the tunnel: HTTP $code"
check "with rp_filter=1 the tunnel works (the exit's replies are not dropped as spoofed)" test "$code" = 200
stop_client
n "$c" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.vc.rp_filter=0

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

pretty "$c" "an error while up (the TUN deleted under it): up ends, the host stays closed"
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
n "$c" ip link del smx0
rc=0
wait "$CLIENT_PID" || rc=$?
note "up's exit status $rc: $(tail -n 1 "$TMP/client.err")"
check "up ends with an error that says the host is kept closed until down" sh -c "[ $rc -ne 0 ] && grep -q 'kept closed until .smolmix-vpn down' '$TMP/client.err'"
reset_counters
probe http://192.0.2.2/ >/dev/null || true
n "$c" curl -sS --max-time 2 -o /dev/null http://192.0.2.2/ 2>/dev/null || true
n "$c" dig +time=1 +tries=1 @192.0.2.2 smolmix.test >/dev/null 2>&1 || true
note "after the error: curl (bound to vc and not), dig: counter out $(leaked)"
check "after the error nothing leaves by vc" test "$(leaked)" -eq 0
check "status says blocked" sh -c "[ \"\$(ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn status | head -1)\" = 'state:     blocked' ]"
check "down exits 0" n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" down
snapshot >"$TMP/after-error.txt"
check "after down: rules, routes and nftables byte-identical to before up" diff "$BEFORE" "$TMP/after-error.txt"

pretty "$c" "a reboot while up: the run dir (tmpfs) is lost, the resolver's backup is not"
cp /etc/netns/"$c"/resolv.conf "$TMP/resolv.orig"
# reboot_while_up STATE_DIR: up, SIGKILL, the run dir emptied as a reboot empties /run, then
# down. Prints down's output; the journal is kept aside in $TMP/run.lost.
reboot_while_up() {
	SMOLMIX_STATE_DIR=$1 start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
	n "$c" grep -q '^# Generated by smolmix-vpn' /etc/resolv.conf || echo "resolv.conf is not ours while up"
	kill -9 "$CLIENT_PID"; wait "$CLIENT_PID" 2>/dev/null || true
	rm -rf "$TMP/run.lost"; mv "$TMP/run" "$TMP/run.lost"
	rm -rf "$TMP/run.lost/state"  # a state dir inside the run dir shares its fate
	n "$c" env SMOLMIX_RUN_DIR="$TMP/run" SMOLMIX_STATE_DIR="$1" "$SMX_BIN/smolmix-vpn" down 2>&1 || true
	# What the reboot itself would have cleared (TUN rules, tables): the lost journal undoes it.
	rm -rf "$TMP/run"; mv "$TMP/run.lost" "$TMP/run"
	n "$c" env SMOLMIX_RUN_DIR="$TMP/run" SMOLMIX_STATE_DIR="$1" "$SMX_BIN/smolmix-vpn" down >/dev/null 2>&1 || true
}
out=$(reboot_while_up "$TMP/state")
note "down after the reboot: $out"
check "down restores resolv.conf byte for byte from the state dir" cmp "$TMP/resolv.orig" /etc/netns/"$c"/resolv.conf
check "and says so" sh -c "echo '$out' | grep -q 'restored /etc/resolv.conf'"
out=$(reboot_while_up "$TMP/run/state")
still=$(head -n 1 /etc/netns/"$c"/resolv.conf)
note "with the backup on the run dir's tmpfs instead: down says '$out'; resolv.conf starts '$still'"
check "positive control: a backup on tmpfs dies with the reboot and resolv.conf stays ours" sh -c "echo '$still' | grep -q '^# Generated by smolmix-vpn'"
cp "$TMP/resolv.orig" /etc/netns/"$c"/resolv.conf
snapshot >"$TMP/after-reboot.txt"
check "rules, routes and nftables byte-identical to before up" diff "$BEFORE" "$TMP/after-reboot.txt"

pretty "$c" "a crash between any two host changes: down restores the host exactly"
# SMOLMIX_FAULT_ABORT_AT=K aborts up (SIGABRT) right after its Kth journal record is on disk
# and before that change is made. K walks every step a full-tunnel up takes.
host_state() { snapshot; n "$c" sysctl net.ipv4.conf.all.src_valid_mark; n "$c" cat /etc/resolv.conf; }
host_state >"$TMP/state-before.txt"
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
steps=$(wc -l <"$TMP/run/journal")
stop_client
bad=0 aborted=0
for k in $(seq 1 "$steps"); do
	rc=0
	n "$c" env SMOLMIX_RUN_DIR="$TMP/run" SMOLMIX_FAULT_ABORT_AT="$k" timeout 20 "$SMX_BIN/smolmix-vpn" up --ipr udp://198.51.100.1:51820 --dns 192.0.2.2 >/dev/null 2>&1 || rc=$?
	[[ $rc -eq 134 ]] && aborted=$((aborted + 1))
	n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" down >/dev/null 2>&1 || true
	host_state >"$TMP/state-after-$k.txt"
	cmp -s "$TMP/state-before.txt" "$TMP/state-after-$k.txt" || { bad=$((bad + 1)); note "after a crash at step $k: $(diff "$TMP/state-before.txt" "$TMP/state-after-$k.txt" | head -3 | paste -sd ' ')"; }
done
note "a full-tunnel up journals $steps steps; aborted at each: $aborted times; host differed after down: $bad times"
check "up really crashed at each of its $steps steps (SIGABRT)" test "$aborted" -eq "$steps"
check "after each crash, down left rules, routes, nftables, the sysctl and resolv.conf as they were" test "$bad" -eq 0

pretty "$c" "a stalled exit under a saturating upload: memory stays bounded, a stop stays prompt"
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$CLIENT_PID/status"; }
kill -STOP "$(cat "$TMP/exit-nymtun0.pid")"
# UDP as fast as python can send, to the discard port through the tunnel, for 10 s.
n "$c" timeout 10 python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b = bytes(1400)
while True: s.sendto(b, ("192.0.2.2", 9))' 2>/dev/null &
FLOOD=$!
sleep 1; r1=$(rss)
wait "$FLOOD" || true
r2=$(rss)
t0=$(date +%s%N)
rc=0; stop_client || rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
kill -CONT "$(cat "$TMP/exit-nymtun0.pid")"
note "RSS of up after 1 s of stalled upload ${r1} kB, after 10 s ${r2} kB; SIGTERM to exit: ${ms} ms (status $rc)"
check "10 s of upload into a stalled exit grows up's memory by less than 16 MiB" test $((r2 - r1)) -lt 16384
check "SIGTERM with the exit stalled: up exits 0 within 10 s" sh -c "[ $rc -eq 0 ] && [ $ms -lt 10000 ]"

pretty "$c" "the exit silent, then killed and restarted: no leak while up reconnects, with backoff"
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
state() { client_status | python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])'; }
EXIT_PID=$(cat "$TMP/exit-nymtun0.pid")
t0=$(date +%s)
kill -STOP "$EXIT_PID"
reset_counters
# The session declares a silent exit dead after 45 s without an answer (link.rs: dead_after).
wait_for 70 sh -c "[ \"\$(ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = reconnecting ]" || true
t_dead=$(( $(date +%s) - t0 ))
note "exit stopped (SIGSTOP): status 'reconnecting' after ${t_dead} s"
check "a silent exit is declared dead: status says reconnecting" test "$(state)" = reconnecting
# Now killed outright, while traffic keeps trying to leave.
kill -KILL "$EXIT_PID"; kill -CONT "$EXIT_PID" 2>/dev/null || true
wait_for 10 sh -c "! ip netns exec $e ip link show nymtun0"
rm -f "$TMP/exit-nymtun0.pid"
for _ in 1 2 3; do
	n "$c" curl -sS --max-time 2 -o /dev/null http://192.0.2.2/ 2>/dev/null || true
	n "$c" dig +time=1 +tries=1 @192.0.2.2 smolmix.test >/dev/null 2>&1 || true
	probe http://192.0.2.2/ >/dev/null || true
done
# Each attempt waits out the connect timeouts (5 s + 10 s for a local exit), then the backoff.
wait_for 60 sh -c "[ \$(grep -c retry_in '$TMP/client.err') -ge 3 ]" || true
note "while the exit was silent and then gone: counter out $(leaked) (curl, dig, curl --interface vc)"
check "zero packets left by vc while up reconnected" test "$(leaked)" -eq 0
start_exit nymtun0 51820
t1=$(date +%s)
wait_for 90 sh -c "[ \$(ip netns exec $c curl -sS --max-time 3 -o /dev/null -w '%{http_code}' http://192.0.2.2/) = 200 ]" || true
t_back=$(( $(date +%s) - t1 ))
code=$(n "$c" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://192.0.2.2/mid.bin 2>/dev/null || true)
delays=$(sed 's/\x1b\[[0-9;]*m//g' "$TMP/client.err" | grep -o 'retry_in=[0-9.]*[a-zµ]*' | cut -d= -f2 | paste -sd ' ')
note "exit back: traffic flows again after ${t_back} s; up's reconnect delays: ${delays:-none logged}"
check "after the exit returns, the tunnel carries traffic again (HTTP $code)" test "$code" = 200
check "the reconnect attempts were spaced out, each wait longer than the one before (backoff)" python3 -c '
import re, sys
def secs(d):
    m = re.fullmatch(r"([0-9.]+)(ms|µs|ns|s)", d)
    return float(m[1]) * {"s": 1, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}[m[2]]
d = [secs(x) for x in sys.argv[1:]]
sys.exit(0 if len(d) >= 3 and all(b > a for a, b in zip(d[1:], d[2:])) else 1)' $delays
stop_client

pretty "$c" "floods: a million malformed packets into the TUN, a million random datagrams at up's port"
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$CLIENT_PID/status"; }
h0=$(hwm)
# Into the TUN: an AF_PACKET socket on smx0 hands each frame to up's TUN reader as it is.
t0=$(date +%s%N)
n "$c" python3 - <<-'EOP'
	import random, socket
	rng = random.Random(7)
	def junk():
	    n = rng.choice([1, 19, 20, 39, 40, 60, 576, 1280, 1500, rng.randrange(1, 1501)])
	    b = bytearray(rng.randbytes(n))
	    if b and rng.random() < 0.9:
	        b[0] = rng.choice([0x45, 0x46, 0x4f, 0x60, 0x65, 0x00])  # plausible versions
	    return bytes(b)
	pkts = [junk() for _ in range(4096)]
	s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
	s.bind(("smx0", 0))
	for i in range(1_000_000):
	    try:
	        s.send(pkts[i & 4095])
	    except OSError:
	        pass  # the TUN's queue is full: the kernel drops, as it would for a real flood
EOP
t_tun=$(( ($(date +%s%N) - t0) / 1000000 ))
# At up's UDP port, from the exit's own address and port (the only source its connected
# socket accepts), through a raw socket in the exit's namespace.
cport=$(n "$c" ss -Hun state established dst 198.51.100.1:51820 | awk '{ split($3, a, ":"); print a[2]; exit }')
t0=$(date +%s%N)
n "$e" python3 - "$cport" <<-'EOP'
	import random, socket, struct, sys
	rng = random.Random(8)
	port = int(sys.argv[1])
	def dgram():
	    body = rng.randbytes(rng.choice([0, 1, 15, 16, 17, 40, 1400, rng.randrange(0, 1470)]))
	    if body and rng.random() < 0.5:
	        body = bytes([3, 0]) + body[2:]  # an LP-looking header half the time
	    return struct.pack("!HHHH", 51820, port, 8 + len(body), 0) + body
	msgs = [dgram() for _ in range(4096)]
	s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
	for i in range(1_000_000):
	    try:
	        s.sendto(msgs[i & 4095], ("198.51.100.2", 0))
	    except OSError:
	        pass
EOP
t_udp=$(( ($(date +%s%N) - t0) / 1000000 ))
h1=$(hwm)
code=$(n "$c" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://192.0.2.2/mid.bin 2>/dev/null || true)
drops=$(client_status | python3 -c 'import json, sys; c = json.load(sys.stdin)["counters"]; print({part: {k: v for k, v in c[part].items() if v and isinstance(v, int)} for part in ("pipeline", "session", "transport")})' 2>/dev/null || true)
note "1M packets into smx0 in ${t_tun} ms, 1M datagrams to port $cport in ${t_udp} ms; peak RSS (VmHWM) ${h0} kB before, ${h1} kB after; curl after: HTTP $code"
note "counted: $drops"
check "up survived both floods and carries traffic after them" sh -c "kill -0 $CLIENT_PID && [ '$code' = 200 ]"
check "peak RSS stays under 128 MiB through the floods" test "$h1" -lt 131072
stop_client

pretty "$c" "one instance: a second up while the first connects"
# A 1 s one-way delay keeps the first up connecting for 2 s, long enough to try a second one.
# (One exit at a time: each allocates from 10.0.0.0/16, routed to its own TUN.)
stop_exit nymtun0
start_exit nymtun0 51821 --delay-ms 1000
: >"$TMP/client.out"
# Not through n(): $! must be smolmix-vpn itself (ip netns exec and env exec it).
ip netns exec "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" up --ipr udp://198.51.100.1:51821 --dns 192.0.2.2 >"$TMP/client.out" 2>"$TMP/client.err" &
CLIENT_PID=$!
t_says_connecting() { n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" status | head -1 | grep -Eq '^state: +connecting$'; }
check "status says connecting while the first up waits for the exit" wait_for 2 t_says_connecting
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
# The journal is replayed as root: a line of a shape smolmix-vpn never writes is refused.
n "$c" ip link add smxdummy type veth peer name smxdummy1  # (no dummy module everywhere)
printf '%s\n' '{"undo":"ip","args":["link","del","smxdummy"]}' \
	"{\"undo\":\"ip\",\"args\":[\"netns\",\"exec\",\"$c\",\"touch\",\"$TMP/pwned\"]}" \
	'{"undo":"sysctl","key":"net.ipv4.ip_forward","value":"1"}' >"$TMP/run/journal"
out=$(n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" down 2>&1) || true
note "down over a journal with two foreign lines: $(echo "$out" | grep -c refusing) refused"
check "a journal line that would run a program is not run" test ! -e "$TMP/pwned"
check "nor one that would set another sysctl" test "$(n "$c" sysctl -n net.ipv4.ip_forward)" = 0
check "down names both refusals" test "$(echo "$out" | grep -c 'refusing a journal entry')" = 2
check "positive control: the line of our own shape in the same journal was undone" sh -c "! ip netns exec $c ip link show smxdummy"
rm -f "$TMP/run/journal"
snapshot >"$TMP/after2.txt"
check "rules, routes and nftables byte-identical to the start" diff "$BEFORE" "$TMP/after2.txt"

finish
