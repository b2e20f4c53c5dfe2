#!/bin/bash
# Closed from the first instant: the kill switch while `up` connects, across a crash, the
# unit's crash path and a restart, the boot-time `block`; the LAN and the host's own container
# bridge with and without --allow-lan; forwarded traffic; a NAT a flood of lookups cannot fill;
# the TUN's public addresses unreachable from the LAN. Against smolmix-exit.
#
#  ns ctr (a container)       ns client                          ns exit (the LAN's router)    ns inet
#  172.29.0.2 http :80 ───────smxbr0 172.29.0.1 (bridge)          smolmix-exit :51830           http :80
#     default via .1          smolmix-vpn up ─ smx0               the NAS: 192.168.77.10        dnsmasq :53
#                             vc 198.51.100.2 ─────────────────── ve 198.51.100.1 · vi ───────── vo 192.0.2.2
#                                192.168.77.2 (the LAN)              192.168.77.10 http :80, dnsmasq :53
#                                                                    routes 172.29.0.0/24 back to the client
#  nft (ns client) "smxleak": counter "out" counts every unmarked packet leaving vc (the
#  transport's own packets carry the mark 0x736d), IPv6 neighbour discovery and MLD aside.
#
# The LAN is the client's uplink segment, as at home: vc carries the default route, so the
# client classifies it as the LAN (system/lan.rs), and the NAS is a second address of the
# router. The container hangs off a bridge whose only port is a veth: the host's own network.
# Only documentation ranges and the private 172.29.0.0/24 and 192.168.77.0/24 (a LAN and a
# container network are private) are used, only inside namespaces this run created.
# Each check prints "ok N - …" or "not ok N - …"; "  # …" lines say what was measured.

set -e
exec 3>&1
CURRENT_SUITE=lockdown
source "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d /tmp/smx-lockdown.XXXXXX)
P="smx-ld-$$"
k="$P-ctr"
EXTRA_NS="$k"
trap cleanup_all EXIT
note() { echo "  # $*" >&3; }
setup_topology "$P"
setup_exit_nat
start_inet
PORT=51830
IPR=udp://198.51.100.1:$PORT

# The NAS on the client's LAN: the uplink segment, a private range beside the documentation one.
n "$c" ip addr add 192.168.77.2/24 dev vc
n "$e" ip addr add 192.168.77.10/24 dev ve
mkdir -p "$TMP/nas"; echo nas >"$TMP/nas/index.html"
(cd "$TMP/nas" && exec ip netns exec "$e" python3 -m http.server 80 --bind 192.168.77.10 >"$TMP/nas-http.log" 2>&1) &
echo $! >"$TMP/nas-http.pid"
ip netns exec "$e" dnsmasq --keep-in-foreground --no-resolv --no-hosts --user=root --bind-interfaces \
	--listen-address=192.168.77.10 --address=/nas.test/192.168.77.10 \
	--pid-file="$TMP/nas-dns.pid" --log-facility="$TMP/nas-dns.log" --log-queries &
# The container behind the client's own bridge, routed (not masqueraded) by the client.
ip netns add "$k"; n "$k" ip link set lo up
n "$c" ip link add smxbr0 type bridge
ip link add vb netns "$c" type veth peer name vk netns "$k"
n "$c" ip link set vb master smxbr0; n "$c" ip link set vb up; n "$c" ip link set smxbr0 up
n "$c" ip addr add 172.29.0.1/24 dev smxbr0
n "$k" ip addr add 172.29.0.2/24 dev vk; n "$k" ip link set vk up
n "$k" ip route add default via 172.29.0.1
n "$c" sysctl -qw net.ipv4.ip_forward=1
n "$e" ip route add 172.29.0.0/24 via 198.51.100.2
mkdir -p "$TMP/ctr"; echo container >"$TMP/ctr/index.html"
(cd "$TMP/ctr" && exec ip netns exec "$k" python3 -m http.server 80 --bind 172.29.0.2 >"$TMP/ctr-http.log" 2>&1) &
echo $! >"$TMP/ctr-http.pid"
wait_for 10 n "$c" curl -sS --max-time 1 -o /dev/null http://192.168.77.10/
wait_for 10 n "$c" curl -sS --max-time 1 -o /dev/null http://172.29.0.2/
wait_for 10 n "$c" dig +short +time=1 +tries=1 @192.168.77.10 nas.test

n "$c" nft -f - <<-'EOF'
table inet smxleak {
	counter out { }
	chain post {
		type filter hook postrouting priority 100; policy accept;
		oifname != "vc" return
		meta mark 0x736d return
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report } return
		counter name out
	}
}
EOF
leaked() { n "$c" nft -j list counter inet smxleak out | python3 -c 'import json,sys; print([o["counter"]["packets"] for o in json.load(sys.stdin)["nftables"] if "counter" in o][0])'; }
reset_counters() { n "$c" nft reset counters table inet smxleak >/dev/null; }
not() { ! "$@"; }
vpn() { n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" "$@"; }
# probes: what an application would try, each bounded to 1-2 s: curl (plain and bound to the
# physical link), curl -6, ping, ping -6, dig.
probes() {
	n "$c" curl -sS --max-time 2 -o /dev/null http://192.0.2.2/ 2>/dev/null || true
	n "$c" curl -sS --max-time 2 --interface vc -o /dev/null http://192.0.2.2/ 2>/dev/null || true
	n "$c" curl -sS --max-time 2 -o /dev/null 'http://[2001:db8:1::2]/' 2>/dev/null || true
	n "$c" ping -c 1 -W 1 192.0.2.2 >/dev/null 2>&1 || true
	n "$c" ping -6 -c 1 -W 1 2001:db8:1::2 >/dev/null 2>&1 || true
	n "$c" dig +time=1 +tries=1 @192.0.2.2 smolmix.test >/dev/null 2>&1 || true
}
killswitch() { n "$c" nft list table inet smolmix_killswitch >/dev/null 2>&1; }
state_is() { [[ $(vpn status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') == "$1" ]]; }
http_ok() { [[ $(n "$c" curl -sS --max-time "${2:-10}" -o /dev/null -w '%{http_code}' "$1" 2>/dev/null) == 200 ]]; }
BEFORE=$TMP/before.txt
# (IPv6 link-local addresses come and go with the bridge's ports on their own: not ours.)
snapshot() { { n "$c" ip rule; n "$c" ip -6 rule; n "$c" ip route show table all; n "$c" ip -6 route show table all; n "$c" nft list ruleset; } 2>&1 | grep -Ev 'expires|packets [0-9]+ bytes [0-9]+|fe80::'; }
snapshot >"$BEFORE"
host_as_before() { snapshot >"$TMP/now.txt"; diff "$BEFORE" "$TMP/now.txt"; }

pretty "$c" "positive control: without a tunnel every probe leaves by vc"
reset_counters
probes
note "probes without smolmix-vpn: counter out $(leaked)"
check "positive control: the counter sees the probes" test "$(leaked)" -gt 5

pretty "$c" "lockdown while connecting: up against an exit that is not there yet"
: >"$TMP/client.out"
ip netns exec "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" up --ipr "$IPR" --dns 192.0.2.2 >"$TMP/client.out" 2>"$TMP/client.err" &
CLIENT_PID=$!
check "the kill switch is in place while up is still connecting" wait_for 5 killswitch
check "status says connecting" wait_for 5 state_is connecting
reset_counters
t0=$(date +%s)
probes; probes
note "for $(( $(date +%s) - t0 )) s while connecting: curl, curl --interface vc, curl -6, ping, ping -6, dig; counter out $(leaked)"
check "nothing left the host while up connected: 0 packets on vc" test "$(leaked)" -eq 0
# A udp:// exit that is not there refuses the connect (ICMP port unreachable) or stays silent
# through the v10 and v9 timeouts; either way the attempt fails and is retried.
check "up said the host is blocked and that smolmix-vpn down opens it" wait_for 30 grep -q 'blocked.*smolmix-vpn down' "$TMP/client.err"
note "up: $(grep -m1 'cannot connect yet' "$TMP/client.err")"
check "status says blocked until connected" sh -c "ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn status | grep -q 'blocked until connected'"
start_exit nymtun0 "$PORT"
t0=$(date +%s)
check "once the exit appears, up connects by itself" wait_for 60 grep -q '^connected' "$TMP/client.out"
note "connected $(( $(date +%s) - t0 )) s after the exit started"
check "and the tunnel carries traffic" http_ok http://192.0.2.2/mid.bin

pretty "$c" "a crash, the unit's ExecStopPost as systemd runs it, then the restart"
stoppost=$(sed -n 's/^ExecStopPost=//p' "$(dirname "$0")/../dist/smolmix-vpn@.service")
stoppost=${stoppost/\/usr\/bin\/smolmix-vpn/$SMX_BIN/smolmix-vpn}
kill -9 "$CLIENT_PID"; wait "$CLIENT_PID" 2>/dev/null || true
out=$(n "$c" env SMOLMIX_RUN_DIR="$TMP/run" SERVICE_RESULT=signal EXIT_CODE=killed EXIT_STATUS=KILL $stoppost 2>&1) || true
note "ExecStopPost ($stoppost) after SIGKILL: $out"
check "ExecStopPost after a crash keeps the host closed and says so" sh -c "echo '$out' | grep -q 'kept closed'"
check "the kill switch is still there" killswitch
reset_counters
probes
note "after the crash and ExecStopPost: counter out $(leaked)"
check "nothing leaves after the crash and ExecStopPost" test "$(leaked)" -eq 0
st=$(vpn status 2>&1 | head -2 | tr '\n' '|')
note "status: $st"
check "status says blocked and how to open the host" sh -c "echo '$st' | grep -q 'blocked' && echo '$st' | grep -q 'smolmix-vpn down'"
# The restart: a prober runs throughout; the new up takes over without a gap.
reset_counters
n "$c" sh -c 'while :; do ping -c 1 -W 1 -I vc 192.0.2.2; ping -c 1 -W 1 192.0.2.2; curl -s --max-time 1 -o /dev/null http://192.0.2.2/; done' >/dev/null 2>&1 &
PROBER=$!
start_client --ipr "$IPR" --dns 192.0.2.2
kill "$PROBER"; wait "$PROBER" 2>/dev/null || true
note "the restart took over: $(grep -m1 'taking over' "$TMP/client.err" || true); probing throughout, counter out $(leaked)"
check "across the restart and its connect nothing left by vc" test "$(leaked)" -eq 0
check "the restarted up carries traffic" http_ok http://192.0.2.2/mid.bin
# A clean stop under systemd: SERVICE_RESULT=success, ExecStopPost has nothing to keep.
stop_client
out=$(n "$c" env SMOLMIX_RUN_DIR="$TMP/run" SERVICE_RESULT=success EXIT_CODE=exited EXIT_STATUS=0 $stoppost 2>&1) || true
note "ExecStopPost after a clean stop: $out"
reset_counters
probes
check "control: after a deliberate stop the probes leave again" test "$(leaked)" -gt 0
check "and the host is as before up" host_as_before

pretty "$c" "a crash, then down: the deliberate way out"
start_client --ipr "$IPR" --dns 192.0.2.2
kill -9 "$CLIENT_PID"; wait "$CLIENT_PID" 2>/dev/null || true
reset_counters; probes
check "after SIGKILL nothing leaves" test "$(leaked)" -eq 0
check "down exits 0" vpn down
reset_counters; probes
check "control: after down the probes leave" test "$(leaked)" -gt 0

pretty "$c" "block (the boot-time lockdown), then up takes over"
out=$(vpn block --ipr "$IPR" --dns 192.0.2.2 2>&1) || true
note "block: $out"
check "block installs the kill switch and exits" killswitch
check "status says blocked" sh -c "ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn status | head -1 | grep -q blocked"
reset_counters; probes
check "nothing leaves after block" test "$(leaked)" -eq 0
check "up takes over and connects" start_client --ipr "$IPR" --dns 192.0.2.2
check "stop: exit 0" stop_client
check "the host is as before" host_as_before

# nas_saw PATTERN LOG: the NAS's log has a line matching PATTERN since the last nas_mark.
nas_mark() { NAS_HTTP=$(wc -l <"$TMP/nas-http.log"); NAS_DNS=$(wc -l <"$TMP/nas-dns.log"); }
nas_http_from() { tail -n +"$((NAS_HTTP + 1))" "$TMP/nas-http.log" | grep -q "^$1 "; }
# Queries from the client's own addresses (one that went through the tunnel would come from the
# exit's allocation, since this NAS sits in the exit's namespace; a real IPR refuses private
# destinations).
nas_dns_queried() { tail -n +"$((NAS_DNS + 1))" "$TMP/nas-dns.log" | grep -Eq 'query\[.* from (192\.168\.77\.2|198\.51\.100\.2)$'; }
nas_dig() { n "$c" dig +time=1 +tries=1 @192.168.77.10 nas.test >/dev/null 2>&1 || true; n "$c" dig +time=1 +tries=1 -b 192.168.77.2 @192.168.77.10 nas.test >/dev/null 2>&1 || true; }

pretty "$c" "the LAN and the host's own bridge, without --allow-lan"
nas_mark
nas_answers_directly() { http_ok http://192.168.77.10/ 2 && nas_http_from 192.168.77.2; }
check "positive control: without a tunnel the NAS answers HTTP from 192.168.77.2" nas_answers_directly
nas_dig
check "positive control: and sees DNS queries" nas_dns_queried
start_client --ipr "$IPR" --dns 192.0.2.2
nas_mark
n "$c" curl -sS --max-time 2 -o /dev/null http://192.168.77.10/ 2>/dev/null || true
n "$c" curl -sS --max-time 2 --interface vc -o /dev/null http://192.168.77.10/ 2>/dev/null || true
nas_dig
check "the NAS sees no HTTP from the client" not nas_http_from 192.168.77.2
check "and no DNS" not nas_dns_queried
check "host -> container works through the host's bridge" http_ok http://172.29.0.2/ 5
check "container -> host works (its replies leave by the bridge)" n "$k" ping -c 1 -W 2 172.29.0.1
reset_counters
code=$(n "$k" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "http://192.0.2.2/mid.bin?ctr$$" 2>/dev/null || true)
from=$(grep "GET /mid.bin?ctr$$ " "$TMP/http.log" | cut -d' ' -f1 | tail -1)
note "container -> inet: HTTP $code, the server saw it from $from; counter out $(leaked)"
check "the container's traffic goes through the tunnel (the server sees the exit)" test "$from" = 192.0.2.1
check "and nothing of it left by vc" test "$(leaked)" -eq 0
stop_client
reset_counters
code=$(n "$k" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "http://192.0.2.2/mid.bin?ctrctl$$" 2>/dev/null || true)
from=$(grep "GET /mid.bin?ctrctl$$ " "$TMP/http.log" | cut -d' ' -f1 | tail -1)
note "control, no tunnel: container -> inet HTTP $code from $from; counter out $(leaked)"
check "positive control: without the tunnel the container's traffic leaves by vc" sh -c "[ '$from' = 172.29.0.2 ] && [ $(leaked) -gt 0 ]"

pretty "$c" "the LAN and the host's own bridge, with --allow-lan"
start_client --ipr "$IPR" --dns 192.0.2.2 --allow-lan
nas_mark
check "the NAS is reached directly" http_ok http://192.168.77.10/ 5
check "and sees the client's LAN address" nas_http_from 192.168.77.2
nas_dig
check "DNS to the NAS never arrives, bound to vc or not" not nas_dns_queried
check "host -> container works" http_ok http://172.29.0.2/ 5
reset_counters
code=$(n "$k" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "http://192.0.2.2/mid.bin?ctrlan$$" 2>/dev/null || true)
from=$(grep "GET /mid.bin?ctrlan$$ " "$TMP/http.log" | cut -d' ' -f1 | tail -1)
check "the container's traffic still goes through the tunnel (from $from)" sh -c "[ '$from' = 192.0.2.1 ] && [ $(leaked) -eq 0 ]"
stop_client

pretty "$c" "a flood of lookups from fresh source ports cannot fill the NAT"
start_client --ipr "$IPR" --dns 192.0.2.2
t0=$(date +%s)
n "$c" python3 - <<-'EOP'
	import socket, struct
	q = lambda i: struct.pack("!HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + b"\x07smolmix\x04test\x00\x00\x01\x00\x01"
	for i in range(20000):
	    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a fresh source port each time
	    s.sendto(q(i), ("192.0.2.2", 53))
	    s.close()
EOP
flood_s=$(( $(date +%s) - t0 ))
ans=$(n "$c" dig +short +time=3 +tries=2 @192.0.2.2 smolmix.test 2>&1 | head -1)
nat_counters() { client_status | python3 -c 'import json,sys; p = json.load(sys.stdin)["counters"]["pipeline"]; print({k: v for k, v in p.items() if "nat" in k and v})'; }
# The status file is rewritten each second: wait for the one that saw the flood.
flood_seen() { nat_counters | grep -q recycled; }
wait_for 5 flood_seen || true
nat=$(nat_counters 2>/dev/null || true)
note "20000 lookups from fresh ports in ${flood_s} s; then dig: '${ans}'; NAT counters: $nat"
check "after 20,000 lookups from fresh ports, dig is answered" test "$ans" = 192.0.2.80
stop_client

pretty "$c" "the TUN's fixed addresses cannot be probed from the LAN (CVE-2019-14899)"
n "$c" nft -f - <<-'EOF'
table inet smxin {
	counter reached { }
	chain in {
		type filter hook input priority 0; policy accept;
		iifname "vc" ip daddr 100.86.0.2 counter name reached
	}
}
EOF
reached() { n "$c" nft list counter inet smxin reached | grep -o 'packets [0-9]*' | cut -d' ' -f2; }
n "$e" ip route add 100.86.0.2/32 via 198.51.100.2
start_client --ipr "$IPR" --dns 192.0.2.2
n "$c" nft reset counters table inet smxin >/dev/null
n "$e" ping -c 3 -i 0.2 -W 1 100.86.0.2 >/dev/null 2>&1 || true
r=$(reached)
n "$c" nft delete chain inet smolmix_mark guard
n "$e" ping -c 3 -i 0.2 -W 1 100.86.0.2 >/dev/null 2>&1 || true
r2=$(reached)
note "pings from the exit's LAN side to 100.86.0.2: reached the client's input $r times with the guard, $((r2 - r)) times without"
check "packets for the TUN's address arriving on vc are dropped before input" test "$r" -eq 0
check "positive control: without the guard chain they reach input" test "$((r2 - r))" -gt 0
stop_client
n "$e" ip route del 100.86.0.2/32 via 198.51.100.2

pretty "$c" "a TUN name that is an interface already: refused before anything changes"
# The kill switch passes everything that leaves by the TUN's name: a profile naming the uplink
# (tun = "vc") would open it. nsenter --net joins only the network namespace, so /sys still
# shows another namespace's interfaces: the check must ask the kernel, not /sys/class/net.
vpn_net_only() { nsenter --net="/run/netns/$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" "$@"; }
n "$c" ip link add smx-other type veth peer name smx-other-p
refused_tun() {
	local out rc=0
	out=$("$@" 2>&1) || rc=$?
	note "$(echo "$out" | tail -n 1)"
	[[ $rc -ne 0 ]] && echo "$out" | grep -q 'exists already' && ! killswitch
}
check "up --tun vc (the uplink) is refused, and no kill switch is left" refused_tun vpn up --ipr "$IPR" --tun vc --no-dns
# The boot-time lockdown of such a profile still blocks: with no TUN yet it lets nothing out by
# an interface's name; the up after it is refused and leaves the host blocked.
vpn block --ipr "$IPR" --tun vc --no-dns >/dev/null 2>&1 || true
reset_counters; probes
check "block --tun vc blocks all the same (no rule passes the uplink by its name): 0 packets" sh -c "[ $(leaked) -eq 0 ] && ip netns exec $c nft list table inet smolmix_killswitch >/dev/null"
blocked_after_refusal() { ! vpn up --ipr "$IPR" --tun vc --no-dns >/dev/null 2>&1 && killswitch && vpn status | head -1 | grep -q blocked; }
check "up --tun vc after it is refused, and the host stays blocked" blocked_after_refusal
vpn down >/dev/null
check "up --tun smx-other under nsenter --net (another namespace's /sys) is refused" refused_tun vpn_net_only up --ipr "$IPR" --tun smx-other --no-dns
vpn_net_only down >/dev/null 2>&1 || true
check "and the down after it leaves smx-other alone" n "$c" ip link show smx-other
reset_counters
n "$c" curl -sS --max-time 2 -o /dev/null http://192.0.2.2/ 2>/dev/null || true
check "control: with no tunnel and no kill switch the probe leaves" test "$(leaked)" -gt 0

finish
