#!/bin/bash
# DNS with a real systemd-resolved: smolmix-vpn gives the TUN our servers and the routing
# domain `~.`, so getent, resolvectl query and programs that ask the stub at 127.0.0.53 all
# resolve through the tunnel and the physical link's server is never asked; after a stop, and
# after SIGKILL + down, resolved's per-link state is what it was.
#
#  ns client, mount namespace M (private /run, /etc an overlay)   ns exit      ns inet
#  dbus-daemon --system (/run/dbus/system_bus_socket)              smolmix-exit dnsmasq, query log:
#  /lib/systemd/systemd-resolved, stub 127.0.0.53                  masquerade   192.0.2.2 (vc's server)
#  /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf                  192.0.2.53 (--dns)
#  smolmix-vpn up ─ smx0: DNS 192.0.2.53, domain ~.
#  vc 198.51.100.2: DNS 192.0.2.2 (`resolvectl dns vc`, as networkd would) ── ve · vi ── vo
#
# Everything that talks to resolved runs in M (nsenter into the process holding it): only
# there do /run/systemd/resolve, the bus and the stub symlink exist. The host's /run and
# /etc/resolv.conf are never written; the suite checks that at its end.
#
# The oracle is dnsmasq's query log: the source address says which way a query came,
# 192.0.2.1 (through the tunnel, masqueraded by the exit) or 198.51.100.2 (straight out of vc).
# Every lookup asks a name of its own (dnsmasq answers all of *.smolmix.test), so resolved's
# cache never answers in place of a server. The oracle is first shown to see direct lookups.
#
# Each check prints "ok N - …" or "not ok N - …"; the last line is "N passed, N failed".

set -e
exec 3>&1
CURRENT_SUITE=resolved
source "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d /tmp/smx-resolved.XXXXXX)
trap cleanup_all EXIT
HOST_RESOLV=$(stat -c '%F %a %u %g %s %i' /etc/resolv.conf; sha256sum </etc/resolv.conf)
HOST_RESOLVED_DIR=$(ls -d /run/systemd/resolve 2>/dev/null || echo absent)
setup_topology "smx-res-$$"
setup_exit_nat
start_exit nymtun0 51820
start_inet

IPR=udp://198.51.100.1:51820
PHYS_DNS=192.0.2.2
TUN_DNS=192.0.2.53

# Mount namespace M: a tmpfs /run, and /etc as an overlay whose upper layer is a tmpfs of M,
# so that /etc/resolv.conf can be resolved's symlink there while the host's file (the lower
# layer, never written) stays as it is. It is held by a `sleep` whose pid is M's handle.
mkdir -p "$TMP/ovl"
ip netns exec "$c" unshare --mount --propagation private sh -c "
	set -e
	mount -t tmpfs -o mode=0755 tmpfs /run
	mkdir -p /run/dbus /run/systemd
	mount -t tmpfs tmpfs '$TMP/ovl'
	mkdir '$TMP/ovl/upper' '$TMP/ovl/work'
	mount -t overlay overlay -o 'lowerdir=/etc,upperdir=$TMP/ovl/upper,workdir=$TMP/ovl/work' /etc
	rm -f /etc/resolv.conf
	ln -s ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
	touch '$TMP/mnt.ready'
	exec sleep infinity" &
echo $! >"$TMP/mnt.pid"
wait_for 10 test -e "$TMP/mnt.ready"
M=$(cat "$TMP/mnt.pid")
m() { nsenter --target "$M" --mount --net "$@"; }

# The distribution's own bus configuration (it includes resolve1's policy) and resolved as
# root, which drops to the systemd-resolve user itself, as under systemd.
nsenter --target "$M" --mount --net dbus-daemon --system --nofork --nopidfile >"$TMP/dbus.log" 2>&1 &
echo $! >"$TMP/dbus.pid"
wait_for 10 m test -S /run/dbus/system_bus_socket
nsenter --target "$M" --mount --net env SYSTEMD_LOG_LEVEL=debug /lib/systemd/systemd-resolved >"$TMP/resolved.log" 2>&1 &
echo $! >"$TMP/resolved.pid"
wait_for 10 m resolvectl --no-pager status || { echo "systemd-resolved did not start:" >&3; tail -n 20 "$TMP/resolved.log" >&3; exit 1; }
m resolvectl dns vc "$PHYS_DNS"

CLIENT_IN_PID=$M
DNS_MODE="systemd-resolved on smx0"
vpn() { m env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" "$@"; }
# What must come back exactly: every link's settings as resolvectl prints them, and the link.
resolved_state() { m resolvectl --no-pager status; m readlink /etc/resolv.conf; }
t_state_is() {
	local now; now=$(resolved_state)
	[[ $now == "$1" ]] || { diff <(echo "$1") <(echo "$now"); return 1; }
}
t_state_changed() { [[ $(resolved_state) != "$BEFORE" ]]; }

# The three ways a program resolves, each for its own name; all must answer 192.0.2.80.
t_getent() { m getent ahosts "$1" | grep -q '^192\.0\.2\.80 '; }
t_query() {
	local out; out=$(m timeout 10 resolvectl --no-pager query "$1") || { echo "$out"; return 1; }
	echo "$out"
	# One line per address, the first after the name: "NAME: 2001:db8:1::80 -- link: vc".
	grep -Eq "^($1: | +)192\.0\.2\.80 +-- link: $2\$" <<<"$out"
}
t_dig() { [[ $(m dig +short +time=2 +tries=1 @127.0.0.53 "$1" A) == 192.0.2.80 ]]; }
# lookups TAG SOURCE LINK: all three, each asked of dnsmasq only from SOURCE, answered via LINK.
lookups() {
	local tag=$1 src=$2 link=$3
	mark_log
	check "getent ahosts getent-$tag.smolmix.test (glibc, /etc/resolv.conf) answers, asked from $src" \
		eval "t_getent getent-$tag.smolmix.test && only_from $src getent-$tag.smolmix.test"
	mark_log
	check "resolvectl query query-$tag.smolmix.test answers via link $link, asked from $src" \
		eval "t_query query-$tag.smolmix.test $link && only_from $src query-$tag.smolmix.test"
	mark_log
	check "dig @127.0.0.53 dig-$tag.smolmix.test answers, asked from $src" \
		eval "t_dig dig-$tag.smolmix.test && only_from $src dig-$tag.smolmix.test"
}
# Nothing reached dnsmasq straight from the client since PHASE_MARK (the last query included).
t_no_direct_since_phase() {
	LOG_MARK=$PHASE_MARK
	! new_queries | grep " from 198\.51\.100\.2\$"
}

t_link_settings() {
	m resolvectl dns smx0 | grep -qx "Link [0-9]* (smx0): $TUN_DNS" &&
	m resolvectl domain smx0 | grep -qx 'Link [0-9]* (smx0): ~\.' &&
	m resolvectl default-route smx0 | grep -qx 'Link [0-9]* (smx0): yes' &&
	m resolvectl llmnr smx0 | grep -qx 'Link [0-9]* (smx0): no' &&
	m resolvectl mdns smx0 | grep -qx 'Link [0-9]* (smx0): no'
}
t_vc_untouched() { m resolvectl dns vc | grep -qx "Link [0-9]* (vc): $PHYS_DNS" && m resolvectl domain vc | grep -qx 'Link [0-9]* (vc):'; }
t_status_resolved() {
	client_status | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert s["dns_mode"] == sys.argv[1], (s["dns_mode"], sys.argv[1])
assert (s["dns_check"] or "").startswith("ok ("), s["dns_check"]' "$DNS_MODE"
}

# tunnel_phase TAG ARGS...: up with ARGS, the TUN's settings, lookups through the tunnel only.
tunnel_phase() {
	local tag=$1; shift
	start_client --ipr "$IPR" --dns "$TUN_DNS" --dns-check-name smolmix.test "$@"
	check "the client's DNS check passes ($tag)" wait_for 10 grep -q '^dns: ok' "$TMP/client.out"
	check "status --json: dns_mode '$DNS_MODE', dns_check ok ($tag)" wait_for 5 t_status_resolved
	check "resolvectl: smx0 has DNS $TUN_DNS, domain ~., default-route yes, LLMNR and mDNS off ($tag)" t_link_settings
	check "resolvectl: vc still has DNS $PHYS_DNS and no domain ($tag)" t_vc_untouched
	check "positive control: resolved's state differs from before while up ($tag)" t_state_changed
	mark_log; PHASE_MARK=$LOG_MARK
	lookups "$tag" 192.0.2.1 smx0
	check "the physical link's server saw no query from 198.51.100.2 during the $tag lookups" t_no_direct_since_phase
}

pretty "$c" "systemd-resolved in ns client's own mount namespace"
check "/etc/resolv.conf there is the symlink to resolved's stub" eval '[[ $(m readlink /etc/resolv.conf) == ../run/systemd/resolve/stub-resolv.conf ]]'
check "the stub file names 127.0.0.53" m grep -qx 'nameserver 127.0.0.53' /etc/resolv.conf
check "resolved runs as systemd-resolve, owns org.freedesktop.resolve1 on the private bus" \
	eval '[[ $(m busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetConnectionUnixUser s org.freedesktop.resolve1) == "u $(id -u systemd-resolve)" ]]'
check "vc has DNS $PHYS_DNS and is a default route" eval 't_vc_untouched && m resolvectl default-route vc | grep -qx "Link [0-9]* (vc): yes"'

pretty "$c" "positive control, no tunnel: every lookup reaches the physical link's server directly"
lookups direct 198.51.100.2 vc
BEFORE=$(resolved_state)

pretty "$c" "full tunnel"
tunnel_phase full
check "SIGTERM stops the client with exit status 0" stop_client
check "resolved's state (all links, resolv.conf link) is exactly what it was before up" t_state_is "$BEFORE"
check "every route, rule, address and device is restored" host_is_clean
lookups after-full 198.51.100.2 vc

pretty "$c" "split tunnel (--route 192.0.2.3/32): resolved still sends every name into the tunnel"
tunnel_phase split --route 192.0.2.3/32
check "192.0.2.53 is routed into smx0, $PHYS_DNS is not" eval \
	'n "$c" ip route get 192.0.2.53 | grep -q "dev smx0" && n "$c" ip route get $PHYS_DNS | grep -q "dev vc"'
check "SIGTERM in split mode exits 0" stop_client
check "resolved's state is exactly what it was before, after the split run" t_state_is "$BEFORE"
check "host restored after the split run" host_is_clean

pretty "$c" "crash: kill -9, then 'down'"
start_client --ipr "$IPR" --dns "$TUN_DNS" --dns-check-name smolmix.test
wait_for 5 t_link_settings || true
kill -KILL "$CLIENT_PID"; wait "$CLIENT_PID" 2>/dev/null || true
check "after SIGKILL the journal still holds 'resolvectl revert smx0' (positive control)" \
	grep -q '"undo":"resolvectl","args":\["revert","smx0"\]' "$TMP/run/journal"
mark_log
check "after SIGKILL, before down: a lookup finds no way out (the kill switch holds)" eval '! m timeout 15 getent ahosts crash.smolmix.test'
check "and the physical link's server was not asked" eval '! new_queries | grep " from 198\.51\.100\.2\$"'
check "smolmix-vpn down succeeds" vpn down
check "resolved's state is exactly what it was before, after down" t_state_is "$BEFORE"
check "host restored after down" host_is_clean
lookups after-down 198.51.100.2 vc

pretty "$c" "uplink mode: /etc/resolv.conf -> resolved's resolv.conf, every link's servers"
m ln -sfn ../run/systemd/resolve/resolv.conf /etc/resolv.conf
UPLINK_BEFORE=$(resolved_state)
check "positive control: without the tunnel, that file (read by glibc itself) names $PHYS_DNS" \
	m grep -qx "nameserver $PHYS_DNS" /etc/resolv.conf
lookups uplink-direct 198.51.100.2 vc
tunnel_phase uplink --route 192.0.2.3/32
# glibc asks the next server after a timeout of the first: only resolved's stub may be listed
# (not our servers either: resolved would adopt them as global ones, checked below).
check "the file glibc reads now names only resolved's stub 127.0.0.53" eval \
	'[[ $(m grep "^nameserver" /etc/resolv.conf) == "nameserver 127.0.0.53" ]]'
check "SIGTERM in uplink mode exits 0" stop_client
check "resolved's state and the uplink symlink are exactly what they were before" t_state_is "$UPLINK_BEFORE"
check "host restored after the uplink run" host_is_clean

pretty "" "the host itself"
check "the host's /etc/resolv.conf is unchanged (type, mode, owner, size, inode, sha256)" eval \
	'[[ $(stat -c "%F %a %u %g %s %i" /etc/resolv.conf; sha256sum </etc/resolv.conf) == "$HOST_RESOLV" ]]'
check "the host's /run/systemd/resolve is as it was ($HOST_RESOLVED_DIR)" eval \
	'[[ $(ls -d /run/systemd/resolve 2>/dev/null || echo absent) == "$HOST_RESOLVED_DIR" ]]'

finish
