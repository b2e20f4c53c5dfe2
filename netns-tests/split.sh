#!/bin/bash
# Split tunnelling and IPv6 blocking, seen from the servers: a request that went through the
# tunnel arrives from the exit (192.0.2.1 / 2001:db8:1::1), one that went direct arrives from
# the client itself (198.51.100.2 / 2001:db8:2::2), because ns exit routes the client's own
# traffic without NAT.
#
#  ns client                       ns exit                                  ns inet
#  curl, ping                      smolmix-exit --listen 198.51.100.1       http :80 on
#  smolmix-vpn up --route/-exclude forwarding; masquerade of the tunnel's   192.0.2.2, 192.0.2.3,
#  vc 198.51.100.2 ─────────────── ve 198.51.100.1 · vi 192.0.2.1 ───────── 2001:db8:1::2, ::3
#     2001:db8:2::2                   2001:db8:2::1     2001:db8:1::1
#  nft: IPv6 leaving vc counted (neighbour discovery and MLD aside)
#
# Each check prints "ok N - …" or "not ok N - …"; the last line is "N passed, N failed".

set -e
exec 3>&1
CURRENT_SUITE=split
source "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d /tmp/smx-split.XXXXXX)
trap cleanup_all EXIT
setup_topology "smx-sp-$$"
setup_exit_nat
start_exit nymtun0 51820
start_inet

n "$c" nft -f - <<-EOF
table inet leak {
	counter v6 {}
	chain out {
		type filter hook output priority 0; policy accept;
		oifname "vc" icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report } accept
		oifname "vc" meta nfproto ipv6 counter name v6
	}
}
EOF
v6_leaked() { n "$c" nft list counter inet leak v6 | grep -o 'packets [0-9]*' | cut -d' ' -f2; }
v6_reset() { n "$c" nft reset counter inet leak v6 >/dev/null; }

# seen_as URL LOG: fetches URL from ns client; prints the client address the server logged.
seen_as() {
	local tag="q$RANDOM$RANDOM"
	n "$c" curl -sS --max-time 10 -o /dev/null "$1?$tag" || return 1
	grep "GET /mid.bin?$tag " "$2" | cut -d' ' -f1
}
# via_exit URL LOG / direct URL LOG: the request arrived from the exit / from the client.
via_exit() { local a; a=$(seen_as "$1" "$2") && [[ $a == 192.0.2.1 || $a == 2001:db8:1::1 ]]; }
direct() { local a; a=$(seen_as "$1" "$2") && [[ $a == 198.51.100.2 || $a == 2001:db8:2::2 ]]; }
H=$TMP/http.log H6=$TMP/http6.log H6B=$TMP/http6b.log
IN4=http://192.0.2.3/mid.bin OUT4=http://192.0.2.2/mid.bin
IN6=http://[2001:db8:1::3]/mid.bin OUT6=http://[2001:db8:1::2]/mid.bin

pretty "$c" "positive control: no tunnel, everything goes direct"
check "192.0.2.3 sees the client's own address" direct "$IN4" "$H"
check "2001:db8:1::3 sees the client's own IPv6 address" direct "$IN6" "$H6B"

pretty "$c" "--route: only 192.0.2.3 and 2001:db8:1::3 through the tunnel"
start_client --ipr udp://198.51.100.1:51820 --route 192.0.2.3/32 --route 2001:db8:1::3/128 --no-dns
check "included 192.0.2.3 is seen with the exit's address" via_exit "$IN4" "$H"
check "included 2001:db8:1::3 is seen with the exit's IPv6 address" via_exit "$IN6" "$H6B"
check "not included 192.0.2.2 is seen with the client's address" direct "$OUT4" "$H"
check "not included 2001:db8:1::2 is seen with the client's IPv6 address" direct "$OUT6" "$H6"
check "SIGTERM stops the client with exit status 0" stop_client
check "every route, rule, address and device is restored" host_is_clean

pretty "$c" "--exclude: everything but 192.0.2.2 and 2001:db8:1::2 through the tunnel"
start_client --ipr udp://198.51.100.1:51820 --exclude 192.0.2.2/32 --exclude 2001:db8:1::2/128 --no-dns
check "excluded 192.0.2.2 is seen with the client's address" direct "$OUT4" "$H"
check "excluded 2001:db8:1::2 is seen with the client's IPv6 address" direct "$OUT6" "$H6"
check "192.0.2.3 is seen with the exit's address" via_exit "$IN4" "$H"
check "2001:db8:1::3 is seen with the exit's IPv6 address" via_exit "$IN6" "$H6B"
# TunnelVision (CVE-2024-3661): a DHCP server or another program pushes more specific routes
# into main. Our table is consulted first, so they must not pull tunnelled traffic out.
n "$c" ip route add 192.0.2.3/32 via 198.51.100.1 dev vc
n "$c" ip -6 route add 2001:db8:1::3/128 via 2001:db8:2::1 dev vc
check "a more specific route in main does not pull 192.0.2.3 out of the tunnel" via_exit "$IN4" "$H"
check "nor 2001:db8:1::3" via_exit "$IN6" "$H6B"
check "SIGTERM stops the client with exit status 0" stop_client
check "every route, rule, address and device is restored" host_is_clean
check "positive control: without the tunnel those routes do send 192.0.2.3 direct" direct "$IN4" "$H"
check "and 2001:db8:1::3" direct "$IN6" "$H6B"
n "$c" ip route del 192.0.2.3/32
n "$c" ip -6 route del 2001:db8:1::3/128

pretty "$c" "--ipv6 off: IPv6 is blocked, never sent by the physical link"
t_v6_fast_fail() {
	local t0 t1
	t0=$(date +%s%N)
	! n "$c" curl -sS --max-time 5 -o /dev/null "$OUT6" 2>"$TMP/v6off.err"
	t1=$(date +%s%N)
	echo "curl -6 failed after $(( (t1 - t0) / 1000000 )) ms: $(cat "$TMP/v6off.err")"
	(( (t1 - t0) / 1000000 < 1000 ))
}
t_no_v6_leak() { [[ $(v6_leaked) -eq 0 ]]; }
t_v6_control() { n "$c" curl -sS --max-time 5 -o /dev/null "$OUT6" && (( $(v6_leaked) > 0 )); }
t_ping6_fails() { ! n "$c" ping -6 -c 1 -W 1 2001:db8:1::2; }
t_no_v6_alloc() { client_status | grep -q '"allocated_ipv6": null'; }
v6_reset
check "positive control: with no tunnel, curl -6 goes out by the physical link and is counted" t_v6_control
start_client --ipr udp://198.51.100.1:51820 --ipv6 off --no-dns
v6_reset
check "curl to an IPv6 server fails in under 1 s" t_v6_fast_fail
check "ping -6 fails at once too" t_ping6_fails
check "IPv4 still goes through the tunnel" via_exit "$OUT4" "$H"
check "zero IPv6 packets left by the physical link" t_no_v6_leak
check "the tunnel reports no IPv6 allocation in use" t_no_v6_alloc
check "SIGTERM stops the client with exit status 0" stop_client
check "every route, rule, address and device is restored" host_is_clean

finish
