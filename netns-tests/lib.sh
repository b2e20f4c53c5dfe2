# Shared helpers for the netns suites: topology, readiness polling, checks.
# Sourced by netns-tests/*.sh; never run directly.
#
#  ns $c (client)                   ns $e (exit)                          ns $i (inet)
#  smolmix-vpn up --ipr udp://..    smolmix-exit --listen 198.51.100.1    python3 http.server :80
#  smx0 100.86.0.2, fd6d:6978::2    nymtun0 10.0.0.1/16, fc00::1/112      dnsmasq :53, udp echo :7
#  vc 198.51.100.2/24 ───────────── ve 198.51.100.1/24
#     2001:db8:2::2/64                 2001:db8:2::1/64
#                                   vi 192.0.2.1/24 ───────────────────── vo 192.0.2.2/24, .3, .53
#                                      2001:db8:1::1/64                      2001:db8:1::2/64, ::3
#                                   forwarding; masquerade of the tunnel's
#                                   10.0.0.0/16 and fc00::/112 out of vi
#
# The client also reaches ns inet directly (routed by ns exit, not masqueraded), so a server
# tells tunnelled traffic (source 192.0.2.1 / 2001:db8:1::1) from direct traffic (source
# 198.51.100.2 / 2001:db8:2::2): that is how the split and leak checks see where a packet went.
# `ip netns exec $c` bind-mounts /etc/netns/$c/resolv.conf (nameserver 192.0.2.2, written by
# setup_topology) over /etc/resolv.conf, so no run can ever touch the host's resolver config.
#
# Only documentation ranges (RFC 5737, RFC 3849) are used, only inside namespaces this run
# created; nothing is ever sent outside them.

SMX_BIN=${SMX_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release}
TESTS_PASSED=0
TESTS_FAILED=0
CURRENT_SUITE=${CURRENT_SUITE:-netns}

pretty() { echo -e "\x1b[32m\x1b[1m[+] ${1:+NS $1: }${2}\x1b[0m" >&3; }
ok() { TESTS_PASSED=$((TESTS_PASSED + 1)); printf 'ok %d - %s\n' $((TESTS_PASSED + TESTS_FAILED)) "$*" >&3; }
not_ok() { TESTS_FAILED=$((TESTS_FAILED + 1)); printf 'not ok %d - %s\n' $((TESTS_PASSED + TESTS_FAILED)) "$*" >&3; }

# check "description" cmd args...: runs the command, prints ok/not ok, never aborts the suite.
check() {
	local what=$1; shift
	if "$@" >>"$TMP/check.log" 2>&1; then ok "$what"; else not_ok "$what"; echo "  (command: $*; see $TMP/check.log)" >&3; tail -n 5 "$TMP/check.log" | sed 's/^/  | /' >&3; fi
}

# wait_for SECONDS cmd args...: polls until the command succeeds (readiness, never fixed sleeps).
wait_for() {
	local deadline=$(( $(date +%s) + $1 )); shift
	until "$@" >/dev/null 2>&1; do
		[[ $(date +%s) -lt $deadline ]] || return 1
		sleep 0.05
	done
}

n() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# setup_topology PREFIX: creates the three namespaces and links, nothing else.
setup_topology() {
	c="$1-client" e="$1-exit" i="$1-inet"
	# The persistent state (the resolv.conf backup) of every smolmix-vpn this suite starts.
	export SMOLMIX_STATE_DIR="$TMP/state"
	# Before the namespace exists: every `ip netns exec $c` must see its own resolv.conf.
	mkdir -p "/etc/netns/$c"
	printf 'nameserver 192.0.2.2\n' >"/etc/netns/$c/resolv.conf"
	for ns in "$c" "$e" "$i"; do ip netns add "$ns"; n "$ns" ip link set lo up; done
	ip link add vc netns "$c" type veth peer name ve netns "$e"
	ip link add vi netns "$e" type veth peer name vo netns "$i"
	n "$c" ip addr add 198.51.100.2/24 dev vc
	n "$e" ip addr add 198.51.100.1/24 dev ve
	n "$e" ip addr add 192.0.2.1/24 dev vi
	n "$i" ip addr add 192.0.2.2/24 dev vo
	n "$e" ip -6 addr add 2001:db8:1::1/64 dev vi nodad
	n "$i" ip -6 addr add 2001:db8:1::2/64 dev vo nodad
	n "$i" ip addr add 192.0.2.3/24 dev vo
	n "$i" ip addr add 192.0.2.53/24 dev vo
	n "$i" ip -6 addr add 2001:db8:1::3/64 dev vo nodad
	n "$c" ip -6 addr add 2001:db8:2::2/64 dev vc nodad
	n "$e" ip -6 addr add 2001:db8:2::1/64 dev ve nodad
	for l in "$c vc" "$e ve" "$e vi" "$i vo"; do set -- $l; n "$1" ip link set "$2" up; done
	# The inet host answers the exit's masqueraded traffic; it has no route to anything else.
	n "$i" ip route add default via 192.0.2.1
	n "$i" ip -6 route add default via 2001:db8:1::1
	n "$e" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	# The client reaches the exit's transport address directly; everything else is the tunnel's.
	n "$c" ip route add default via 198.51.100.1
	n "$c" ip -6 route add default via 2001:db8:2::1
}

# start_exit NAME PORT [ARGS]: smolmix-exit in ns $e with its TUN and masquerade.
start_exit() {
	local tun=$1 port=$2; shift 2
	# Truncate first: the background redirect happens later, and an old "listening" line
	# from a previous exit must not count as readiness.
	: >"$TMP/exit-$tun.out"
	ip netns exec "$e" "$SMX_BIN/smolmix-exit" --listen "198.51.100.1:$port" --tun "$tun" "$@" >"$TMP/exit-$tun.out" 2>"$TMP/exit-$tun.err" &
	echo $! >"$TMP/exit-$tun.pid"
	wait_for 10 grep -q '^listening' "$TMP/exit-$tun.out" || { cat "$TMP/exit-$tun.err" >&3; return 1; }
}

# stop_exit NAME: stops the exit started with that TUN and waits until its TUN is gone.
stop_exit() {
	kill "$(cat "$TMP/exit-$1.pid")" && rm -f "$TMP/exit-$1.pid"
	wait_for 10 sh -c "! ip netns exec '$e' ip link show '$1'"
}

setup_exit_nat() {
	n "$e" nft -f - <<-EOF
	table inet smxtest {
		chain post {
			type nat hook postrouting priority srcnat;
			oifname "vi" ip saddr 10.0.0.0/16 masquerade
			oifname "vi" ip6 saddr fc00::/112 masquerade
		}
	}
	EOF
}

# start_inet: HTTP (files under $TMP/www), DNS (dnsmasq) and a UDP echo server in ns $i.
start_inet() {
	mkdir -p "$TMP/www"
	head -c 20000000 /dev/urandom >"$TMP/www/big.bin"
	head -c 1000000 /dev/urandom >"$TMP/www/mid.bin"
	(cd "$TMP/www" && exec ip netns exec "$i" python3 -m http.server 80 --bind 0.0.0.0 >"$TMP/http.log" 2>&1) &
	echo $! >"$TMP/http.pid"
	(cd "$TMP/www" && exec ip netns exec "$i" python3 -m http.server 80 --bind 2001:db8:1::2 >"$TMP/http6.log" 2>&1) &
	echo $! >"$TMP/http6.pid"
	(cd "$TMP/www" && exec ip netns exec "$i" python3 -m http.server 80 --bind 2001:db8:1::3 >"$TMP/http6b.log" 2>&1) &
	echo $! >"$TMP/http6b.pid"
	ip netns exec "$i" dnsmasq --keep-in-foreground --no-resolv --no-hosts --user=root --bind-interfaces \
		--listen-address=192.0.2.2,192.0.2.53 --address=/smolmix.test/192.0.2.80 --address=/smolmix.test/2001:db8:1::80 \
		--pid-file="$TMP/dnsmasq.pid" --log-facility="$TMP/dnsmasq.log" --log-queries &
	ip netns exec "$i" python3 "$(dirname "${BASH_SOURCE[0]}")/udp_echo.py" 192.0.2.2 7 >"$TMP/udpecho.log" 2>&1 &
	echo $! >"$TMP/udpecho.pid"
	wait_for 10 n "$i" python3 -c 'import socket; socket.create_connection(("192.0.2.2", 80), 1)'
	wait_for 10 n "$i" python3 -c 'import socket; socket.create_connection(("2001:db8:1::2", 80), 1)'
	wait_for 10 n "$i" python3 -c 'import socket; socket.create_connection(("2001:db8:1::3", 80), 1)'
	wait_for 10 n "$i" dig +short +time=1 +tries=1 @192.0.2.2 smolmix.test
}

# start_client ARGS...: smolmix-vpn up in ns $c; waits for its "connected" line. It runs under
# `ip netns exec` (which binds /etc/netns/$c/resolv.conf over /etc/resolv.conf), or with
# CLIENT_NET_ONLY=1 under `nsenter --net`, joining only the network namespace: in per-app mode
# the namespace `up --netns` creates (a mount under /run/netns) must stay visible to later
# commands, as on a real host, and `ip netns exec` would keep it in a private mount namespace.
start_client() {
	local enter=(ip netns exec "$c")
	[[ -z ${CLIENT_NET_ONLY:-} ]] || enter=(nsenter --net="/run/netns/$c")
	# CLIENT_IN_PID=PID: the network and mount namespaces of that process (resolved.sh: where
	# systemd-resolved, its bus and its /run live).
	[[ -z ${CLIENT_IN_PID:-} ]] || enter=(nsenter --target "$CLIENT_IN_PID" --mount --net)
	: >"$TMP/client.out"    # an old "connected" line must not count as readiness
	# CLIENT_WRAP=(CMD ARGS...): runs up under CMD (dns.sh: strace); CLIENT_PID is then CMD's.
	"${enter[@]}" env SMOLMIX_RUN_DIR="$TMP/run" "${CLIENT_WRAP[@]}" "$SMX_BIN/smolmix-vpn" up "$@" >"$TMP/client.out" 2>"$TMP/client.err" &
	CLIENT_PID=$!
	wait_for 30 grep -q '^connected' "$TMP/client.out" || { echo "client did not connect:" >&3; cat "$TMP/client.err" >&3; return 1; }
}

# The query log of start_inet's dnsmasq: the source address says which way a query came.
# Only the lines written since the last mark_log count.
mark_log() { LOG_MARK=$(wc -l <"$TMP/dnsmasq.log"); }
new_queries() { tail -n +"$((LOG_MARK + 1))" "$TMP/dnsmasq.log" | grep 'query\[' || true; }
# queried_from SOURCE [NAME]: a new query for NAME (smolmix.test) came from SOURCE.
queried_from() { new_queries | grep -q " ${2:-smolmix.test} from $1\$"; }
# only_from SOURCE [NAME]: within 3 s a new query for NAME, and every new query came from SOURCE.
only_from() {
	wait_for 3 queried_from "$@" || { new_queries; return 1; }
	! new_queries | grep -v " from $1\$"
}

client_status() { n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" status --json; }

# stop_client: SIGTERM, expect exit status 0.
stop_client() {
	kill -TERM "$CLIENT_PID"
	local rc=0
	wait "$CLIENT_PID" || rc=$?
	return $rc
}

# Nothing of ours is left in ns $c: no TUN, no rules (our table's, the transport mark's), no
# table, no kill switch or mark table, no journal.
host_is_clean() {
	! n "$c" ip link show smx0 2>/dev/null &&
	! n "$c" ip rule show | grep -Eq 'lookup 29549|fwmark 0x736d' &&
	! n "$c" ip -6 rule show | grep -Eq 'lookup 29549|fwmark 0x736d' &&
	! n "$c" nft list table inet smolmix_mark >/dev/null 2>&1 &&
	[[ -z $(n "$c" ip route show table 29549 2>/dev/null) ]] &&
	[[ -z $(n "$c" ip -6 route show table 29549 2>/dev/null) ]] &&
	! n "$c" nft list table inet smolmix_killswitch >/dev/null 2>&1 &&
	[[ ! -e $TMP/run/journal ]]
}

cleanup_all() {
	set +e
	exec 2>/dev/null
	for p in "$TMP"/*.pid; do [[ -e $p ]] && kill "$(cat "$p")"; done
	[[ -n ${CLIENT_PID:-} ]] && kill "$CLIENT_PID"
	# EXTRA_NS: namespaces a suite adds to the three of setup_topology.
	for ns in "$c" "$e" "$i" ${EXTRA_NS:-}; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid"; done
		ip netns del "$ns"
	done
	[[ -n ${c:-} ]] && rm -rf "/etc/netns/$c"
	rmdir /etc/netns 2>/dev/null
	wait
	[[ -n ${KEEP_TMP:-} ]] || rm -rf "$TMP"
}

finish() {
	echo "$CURRENT_SUITE: $TESTS_PASSED passed, $TESTS_FAILED failed" >&3
	[[ $TESTS_FAILED -eq 0 ]]
}
