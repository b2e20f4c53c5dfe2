#!/bin/bash
# smolmix-vpn@.service under a real systemd: a small Debian (mmdebstrap, from the Debian
# archive) booted with systemd-nspawn, the project's .deb installed in it with dpkg, the unit
# enabled at boot for a profile whose exit is lib.sh's local smolmix-exit. Checks that the kill
# switch is in place before the network comes up, that nothing leaves while the unit waits for
# an exit that is not there yet, that kill -9 of `up` is followed by ExecStopPost keeping the
# host closed and Restart= reconnecting with nothing leaked meanwhile, that a stop opens the
# host, and that a unit whose `up` keeps failing ends `failed` with the host still closed.
#
#  container (systemd-nspawn -b --private-network; its network namespace is named $c)
#  systemd 252: smolmix-vpn-lockdown@test   `block`, before network-pre.target
#               smx-net.service              brings vc up after network-pre (as ifupdown does)
#               smx-bootprobe.service        what a program started at boot sends
#               smolmix-vpn@test             `up --profile test` ─ smx0
#  vc 198.51.100.2/24, 2001:db8:2::2/64 ───── ns exit: ve 198.51.100.1/24 ──── ns inet
#                                                 smolmix-exit :51840          http :80, dnsmasq :53
#                                                 vi 192.0.2.1 ─────────────── vo 192.0.2.2, .53
#  nft (ns $c) "smxleak": counter "out" counts every unmarked packet leaving vc (the
#  transport's own packets carry the mark 0x736d), IPv6 neighbour discovery and MLD aside.
#
# nspawn runs in the namespace $h, which holds vc between boots; --private-network gives the
# container a namespace of its own, and the suite moves vc into it once the container's
# systemd runs (a NIC that appears after the lockdown, as one udev announces late may). With
# --private-network nspawn mounts /sys and /proc/sys/net for the container's own namespace and
# grants CAP_NET_ADMIN, as on a real host; --network-namespace-path would not (measured: the
# host's sysfs, so /sys/class/net lists the host's interfaces; /proc/sys read-only; no
# CAP_NET_ADMIN). nspawn's --network-interface refuses an interface udev has not initialised,
# and there is no udev here: hence the move by hand. The container gets a unified cgroup hierarchy and the bpf() system call, which
# its systemd needs to enforce the unit's DevicePolicy=closed (on the cgroup v1 devices
# controller, read-only in a container, DeviceAllow= would silently not apply); a control
# unit checks that it does. The container has its own root, /etc/resolv.conf included
# (--resolv-conf=off); the host's is checked unchanged at the end.
#
# Boots: (1) control, nothing of ours enabled: the counter sees the boot probe and the probes;
# (2) the exit running: ordering, active, traffic, kill -9, stop, the start limit;
# (3) the exit not started: blocked from the start, then connected when the exit appears.
#
# The Debian root is built once (~20 s) and kept as a tarball under $SMX_ROOT_CACHE (default
# /var/cache/smolmix-vpn-tests), keyed by the release, the variant, the package list and
# mmdebstrap's version, rebuilt after 7 days. It holds Debian's packages only: the .deb under
# test is installed by dpkg into a fresh copy (a tmpfs) each run. SMX_ROOT_CACHE=none builds
# it every time.
# Only documentation ranges, only inside namespaces this run created.
# Each check prints "ok N - …" or "not ok N - …"; "  # …" lines say what was measured.

set -e
exec 3>&1
CURRENT_SUITE=systemd
source "$(dirname "$0")/lib.sh"
T_START=$(date +%s)
P="smx-sd-$$"
c="$P-client" e="$P-exit" i="$P-inet" h="$P-host"
EXTRA_NS="$h"
TMP=$(mktemp -d /tmp/smx-systemd.XXXXXX)
ROOT=$TMP/root
PORT=51840
note() { echo "  # $*" >&3; }
not() { ! "$@"; }
abort() { echo "  (cannot go on: $*)" >&3; finish || true; exit 1; }

# The .deb that scripts/package.sh built from these binaries.
DEB=$(ls "$SMX_BIN"/../debian/smolmix-vpn_*.deb 2>/dev/null | head -1 || true)

LEADER='' NSPAWN_PID='' CGROUPS=()
# The container's commands: every namespace of its PID 1 (so its root, its systemd, its
# journal), a clean environment.
ctr() { nsenter --target "$LEADER" --all env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
prop() { ctr systemctl show -p "$2" --value "$1"; }
running() { [[ -n $NSPAWN_PID ]] && ! gone "$NSPAWN_PID"; }
# gone PID: exited (a zombie not yet waited for counts as gone).
gone() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null || true); [[ -z $s || $s == Z* ]]; }

cleanup() {
	set +e
	exec 2>/dev/null
	if running; then
		ctr systemctl poweroff
		local n=0; while running && ((n++ < 200)); do sleep 0.05; done
		running && kill -TERM "$NSPAWN_PID"
		n=0; while running && ((n++ < 100)); do sleep 0.05; done
		running && kill -KILL "$NSPAWN_PID"
		wait "$NSPAWN_PID"
	fi
	mountpoint -q "$ROOT" && { umount "$ROOT" || umount -l "$ROOT"; }
	cleanup_all
	for cg in "${CGROUPS[@]}"; do [[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} \;; done
	rm -rf "/run/systemd/nspawn/propagate/$P"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# The Debian root.

PACKAGES=systemd,systemd-sysv,dbus,iproute2,nftables,curl,iputils-ping,dnsutils
build_root() {
	local cache=${SMX_ROOT_CACHE:-/var/cache/smolmix-vpn-tests} key tar
	key=$(printf '%s\n' bookworm apt "$PACKAGES" "$(mmdebstrap --version)" | sha256sum | cut -c1-16)
	if [[ $cache == none ]]; then
		tar=$TMP/debian-root.tar
	else
		mkdir -p "$cache"
		tar=$cache/debian-bookworm-$key.tar
		find "$cache" -maxdepth 1 -name 'debian-bookworm-*.tar' -mtime +7 -delete
	fi
	if [[ ! -s $tar ]]; then
		# No mirror named: mmdebstrap's default for a stable release (with updates and security).
		mmdebstrap --quiet --format=tar --variant=apt --include="$PACKAGES" bookworm "$tar.part" </dev/null >"$TMP/mmdebstrap.log" 2>&1 ||
			{ tail -n 20 "$TMP/mmdebstrap.log" >&3; rm -f "$tar.part"; return 1; }
		mv "$tar.part" "$tar"
		note "built the Debian root with mmdebstrap: $(du -h "$tar" | cut -f1)"
	else
		note "the Debian root from $tar (built $(date -r "$tar" '+%F %R'))"
	fi
	# In memory: unpacking it and removing it on disk took half a minute here.
	mkdir -p "$ROOT"
	mount -t tmpfs -o size=1g,mode=0755 smx-debian-root "$ROOT"
	tar -C "$ROOT" --xattrs --xattrs-include='*' --numeric-owner -xf "$tar"
}

pretty "" "a Debian bookworm root with systemd, the .deb installed by dpkg"
t0=$(date +%s)
check "the .deb is there ($DEB)" test -f "$DEB"
check "mmdebstrap builds the root (or it comes from the cache)" build_root
note "root ready in $(( $(date +%s) - t0 )) s: $(du -sh "$ROOT" | cut -f1)"
[[ -x $ROOT/lib/systemd/systemd && -f $DEB ]] || abort "no root or no .deb: nothing to boot"
# dpkg in the root as it runs there: its database, its dependency check. No network meanwhile.
nsp_run() { systemd-nspawn --quiet --keep-unit --register=no --private-network --resolv-conf=off --timezone=off -D "$ROOT" "$@"; }
check "dpkg -i installs the .deb in the root, its dependencies satisfied" \
	nsp_run --bind-ro="$DEB:/run/smolmix-vpn.deb" dpkg -i /run/smolmix-vpn.deb
dpkg_installed() { grep -A1 '^Package: smolmix-vpn$' "$ROOT/var/lib/dpkg/status" | grep -q 'install ok installed'; }
check "dpkg knows smolmix-vpn as installed" dpkg_installed
for u in smolmix-vpn@.service smolmix-vpn-lockdown@.service; do
	check "the package installed /lib/systemd/system/$u, the same as dist/$u" cmp "$ROOT/lib/systemd/system/$u" "$(dirname "$0")/../dist/$u"
done

# The profile: the local exit, DNS through the tunnel to the inet namespace's dnsmasq.
mkdir -p "$ROOT/etc/smolmix-vpn"
printf 'ipr = "udp://198.51.100.1:%s"\ndns = ["192.0.2.2"]\ndns-check-name = "smolmix.test"\n' "$PORT" >"$ROOT/etc/smolmix-vpn/test.toml"
chmod 0644 "$ROOT/etc/smolmix-vpn/test.toml"
# The container's own resolver file, a server the tunnel's DNS is not: `up` rewrites it.
rm -f "$ROOT/etc/resolv.conf"
printf 'nameserver 192.0.2.53\n' >"$ROOT/etc/resolv.conf"
chmod 0644 "$ROOT/etc/resolv.conf"
RESOLV_SUM=$(sha256sum <"$ROOT/etc/resolv.conf")
HOST_RESOLV=$( { stat -c '%F %a %u %g %s %Y' /etc/resolv.conf; readlink /etc/resolv.conf; sha256sum </etc/resolv.conf; } 2>&1)

# The harness's units. smx-net waits for the suite's leak counter before it brings vc up, so
# every packet that could leave is counted.
cat >"$ROOT/etc/systemd/system/smx-net.service" <<-'EOF'
	[Unit]
	Description=test harness: the uplink vc, configured after network-pre.target as ifupdown does
	DefaultDependencies=no
	After=local-fs.target network-pre.target
	Wants=network.target
	Before=network.target network-online.target shutdown.target
	Conflicts=shutdown.target

	[Service]
	Type=oneshot
	RemainAfterExit=yes
	ExecStartPre=/bin/sh -c 'n=0; until nft list table inet smxleak >/dev/null 2>&1; do n=$((n+1)); [ $n -lt 1200 ] || exit 1; sleep 0.05; done'
	ExecStart=/sbin/ip link set vc up
	ExecStart=/sbin/ip addr add 198.51.100.2/24 dev vc
	ExecStart=/sbin/ip -6 addr add 2001:db8:2::2/64 dev vc nodad
	ExecStart=/sbin/ip route add default via 198.51.100.1
	ExecStart=/sbin/ip -6 route add default via 2001:db8:2::1

	[Install]
	WantedBy=multi-user.target
EOF
cat >"$ROOT/etc/systemd/system/smx-bootprobe.service" <<-'EOF'
	[Unit]
	Description=test harness: what a program started at boot sends
	After=network.target

	[Service]
	Type=oneshot
	RemainAfterExit=yes
	ExecStart=-/usr/bin/curl -sS --max-time 2 -o /dev/null http://192.0.2.2/bootprobe
	ExecStart=-/usr/bin/curl -sS --max-time 2 -o /dev/null http://[2001:db8:1::2]/bootprobe
	ExecStart=-/bin/ping -c 1 -W 1 192.0.2.2
	ExecStart=-/usr/bin/dig +time=1 +tries=1 @192.0.2.2 bootprobe.smolmix.test

	[Install]
	WantedBy=multi-user.target
EOF
systemctl --root="$ROOT" --quiet enable smx-net.service smx-bootprobe.service

# ---------------------------------------------------------------------------------------------
# The namespaces, the exit's and inet's servers (lib.sh), the container's boots.

for ns in "$h" "$e" "$i"; do ip netns add "$ns"; n "$ns" ip link set lo up; done
ip link add vi netns "$e" type veth peer name vo netns "$i"
n "$e" ip addr add 192.0.2.1/24 dev vi
n "$i" ip addr add 192.0.2.2/24 dev vo
n "$i" ip addr add 192.0.2.3/24 dev vo
n "$i" ip addr add 192.0.2.53/24 dev vo
n "$e" ip -6 addr add 2001:db8:1::1/64 dev vi nodad
n "$i" ip -6 addr add 2001:db8:1::2/64 dev vo nodad
n "$i" ip -6 addr add 2001:db8:1::3/64 dev vo nodad
n "$e" ip link set vi up; n "$i" ip link set vo up
n "$i" ip route add default via 192.0.2.1
n "$i" ip -6 route add default via 2001:db8:1::1
n "$e" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
# The container's uplink: vc waits in $h between boots.
ip link add vc netns "$h" type veth peer name ve netns "$e"
n "$e" ip addr add 198.51.100.1/24 dev ve
n "$e" ip -6 addr add 2001:db8:2::1/64 dev ve nodad
n "$e" ip link set ve up
setup_exit_nat
start_inet

# The cgroup the container lives under: one of this run's own, in each hierarchy this process
# is in (nspawn --keep-unit puts its payload below its own cgroup).
while IFS=: read -r _ ctl path; do
	case $ctl in
	name=systemd) base=/sys/fs/cgroup/systemd ;;
	'') if [[ -d /sys/fs/cgroup/unified ]]; then base=/sys/fs/cgroup/unified; else base=/sys/fs/cgroup; fi ;;
	*) continue ;;
	esac
	[[ -d $base$path ]] && mkdir -p "$base$path/$P" && CGROUPS+=("$base$path/$P")
done </proc/self/cgroup

find_leader() {
	LEADER=$(pgrep -P "$NSPAWN_PID" -x systemd | head -1)
	[[ -n $LEADER ]] && [[ $(readlink "/proc/$LEADER/ns/net") != "$(ip netns exec "$h" readlink /proc/self/ns/net)" ]]
}
# boot NAME: the container booted with a network namespace of its own, which becomes $c; vc
# moved into it from $h, then the leak counter put there (smx-net waits for the counter before
# it brings vc up). The console goes to $TMP/nspawn-NAME.log; the journal stays in the root.
boot() {
	(
		for cg in "${CGROUPS[@]}"; do echo "$BASHPID" >"$cg/cgroup.procs"; done
		exec nsenter --net="/run/netns/$h" env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --boot \
			--directory="$ROOT" --machine="$P" --keep-unit --register=no \
			--private-network --system-call-filter=bpf \
			--resolv-conf=off --timezone=off --link-journal=no --console=pipe
	) </dev/null >"$TMP/nspawn-$1.log" 2>&1 &
	NSPAWN_PID=$!
	wait_for 30 find_leader || { LEADER=""; echo "  no container came up:" >&3; tail -n 20 "$TMP/nspawn-$1.log" >&3; return 1; }
	ip -n "$h" link set vc netns "$LEADER"
	ip netns attach "$c" "$LEADER"
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
	# systemd answers on its bus (the boot itself goes on).
	wait_for 30 ctr systemctl show -p Version --value
}
# power_off: `systemctl poweroff` in the container; returns nspawn's exit status.
power_off() {
	local rc=0
	ctr systemctl poweroff || true
	wait_for 60 gone "$NSPAWN_PID" || return 1
	wait "$NSPAWN_PID" || rc=$?
	NSPAWN_PID='' LEADER=''
	# The namespace outlives the container (ip netns attach holds it): vc goes back to $h, its
	# addresses flushed by the move, and the exit's side stays as it is.
	ip -n "$c" link set vc netns "$h"
	ip netns del "$c"
	return $rc
}

leaked() { n "$c" nft -j list counter inet smxleak out | python3 -c 'import json,sys; print([o["counter"]["packets"] for o in json.load(sys.stdin)["nftables"] if "counter" in o][0])'; }
reset_counters() { n "$c" nft reset counters table inet smxleak >/dev/null; }
# probes: what a program in the container would try, each bounded to 1-2 s: curl (plain and
# bound to the uplink), curl -6, ping, ping -6, dig.
probes() {
	ctr curl -sS --max-time 2 -o /dev/null http://192.0.2.2/ 2>/dev/null || true
	ctr curl -sS --max-time 2 --interface vc -o /dev/null http://192.0.2.2/ 2>/dev/null || true
	ctr curl -sS --max-time 2 -o /dev/null 'http://[2001:db8:1::2]/' 2>/dev/null || true
	ctr ping -c 1 -W 1 192.0.2.2 >/dev/null 2>&1 || true
	ctr ping -6 -c 1 -W 1 2001:db8:1::2 >/dev/null 2>&1 || true
	ctr dig +time=1 +tries=1 @192.0.2.2 smolmix.test >/dev/null 2>&1 || true
}
killswitch() { ctr nft list table inet smolmix_killswitch >/dev/null 2>&1; }
active() { [[ $(prop "${1:-smolmix-vpn@test}" ActiveState) == active ]]; }
cursor() { ctr journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p'; }
# journal_since CURSOR UNIT...: the messages of these units since CURSOR.
journal_since() { local cur=$1; shift; ctr journalctl -q --no-pager -o cat --after-cursor="$cur" "${@/#/--unit=}"; }
# via_tunnel TAG: an HTTP GET from the container; the inet server saw it from the exit.
via_tunnel() {
	[[ $(ctr curl -sS --max-time "${2:-5}" -o /dev/null -w '%{http_code}' "http://192.0.2.2/mid.bin?$1" 2>/dev/null) == 200 ]] &&
		[[ $(grep "GET /mid.bin?$1 " "$TMP/http.log" | cut -d' ' -f1 | tail -1) == 192.0.2.1 ]]
}
status_text() { ctr smolmix-vpn status 2>&1; }
# Nothing of ours left in the container's namespace and run dir.
clean_host() {
	! ctr ip link show smx0 >/dev/null 2>&1 &&
	! ctr ip rule show | grep -Eq 'lookup 29549|fwmark 0x736d' &&
	! ctr ip -6 rule show | grep -Eq 'lookup 29549|fwmark 0x736d' &&
	! ctr nft list table inet smolmix_mark >/dev/null 2>&1 &&
	! killswitch &&
	[[ -z $(ctr ip route show table 29549 2>/dev/null) ]] &&
	! ctr test -s /run/smolmix-vpn/journal
}
# t_before A B: monotonic timestamps, A earlier than B (both set).
t_before() { [[ $1 -gt 0 && $2 -gt 0 && $1 -le $2 ]]; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs_since() { local d=$(( $(ms) - $1 )); printf '%d.%02d' $((d / 1000)) $((d % 1000 / 10)); }
# unit_is UNIT PROPERTY VALUE
unit_is() { [[ $(prop "$1" "$2") == "$3" ]]; }

# ---------------------------------------------------------------------------------------------
pretty "" "boot 1, the control: nothing of ours enabled, the same counter"
check "the container boots (systemd answers)" boot control
[[ -n $LEADER ]] || abort "no container"
check "the boot probe ran" wait_for 30 active smx-bootprobe.service
probes
note "boot probe and probes without smolmix-vpn: counter out $(leaked)"
check "positive control: the counter sees the boot probe and the probes leave by vc" test "$(leaked)" -gt 5
check "poweroff: nspawn exits 0" power_off

systemctl --root="$ROOT" --quiet enable smolmix-vpn@test.service
check "smolmix-vpn@test enabled offline (the multi-user.target.wants link)" \
	test -L "$ROOT/etc/systemd/system/multi-user.target.wants/smolmix-vpn@test.service"

# ---------------------------------------------------------------------------------------------
pretty "" "boot 2: the exit is running"
start_exit nymtun0 "$PORT"
t0=$(ms)
check "the container boots" boot withexit
[[ -n $LEADER ]] || abort "no container"
check "smolmix-vpn@test becomes active (READY=1)" wait_for 60 active
note "active $(secs_since "$t0") s after nspawn started"
# The boot's order, from systemd's own timestamps (CLOCK_MONOTONIC, µs).
boot_order() {
	lock_exit=$(prop smolmix-vpn-lockdown@test.service ExecMainExitTimestampMonotonic)
	lock_rc=$(prop smolmix-vpn-lockdown@test.service ExecMainStatus)
	netpre=$(prop network-pre.target ActiveEnterTimestampMonotonic)
	net_start=$(prop smx-net.service ExecMainStartTimestampMonotonic)
	up_start=$(prop smolmix-vpn@test.service ExecMainStartTimestampMonotonic)
	note "monotonic µs: lockdown's block exited $lock_exit (status $lock_rc), network-pre.target $netpre, smx-net started $net_start, up started $up_start"
}
boot_order
check "the lockdown ran at boot and succeeded" test "$lock_rc" = 0
check "its kill switch was in before network-pre.target" t_before "$lock_exit" "$netpre"
check "and before vc came up (smx-net)" t_before "$lock_exit" "$net_start"
check "up started after it" t_before "$lock_exit" "$up_start"
check "the kill switch table is in place" killswitch
log=$(ctr journalctl -q --no-pager -o cat -b -u smolmix-vpn@test)
ready_after_connected() { grep -e '^connected to' -e '^Started smolmix-vpn@test' <<<"$log" | head -1 | grep -q '^connected to'; }
check "READY=1 came after up's connected line (the journal's order)" ready_after_connected
main=$(prop smolmix-vpn@test MainPID)
caps=$(ctr sed -n 's/^CapEff:\t*//p; s/^NoNewPrivs:\t*/nnp=/p; s/^Seccomp:\t*/seccomp=/p' "/proc/$main/status" | tr '\n' ' ')
note "up (pid $main in the container): CapEff $caps"
check "the running up has CAP_NET_ADMIN and CAP_CHOWN only, no new privileges, a seccomp filter" \
	test "$caps" = "0000000000001001 nnp=1 seccomp=2 "
# DevicePolicy=closed is enforced (the control unit cannot open the TUN clone device), and
# DeviceAllow= opens it again: so the unit opened /dev/net/tun by its DeviceAllow line.
check "control: a unit with DevicePolicy=closed cannot open /dev/net/tun" \
	not ctr systemd-run --quiet --wait --pipe -p DevicePolicy=closed /bin/sh -c 'exec 3<>/dev/net/tun'
check "a unit with DevicePolicy=closed and DeviceAllow=/dev/net/tun rw can" \
	ctr systemd-run --quiet --wait --pipe -p DevicePolicy=closed -p 'DeviceAllow=/dev/net/tun rw' /bin/sh -c 'exec 3<>/dev/net/tun'
check "the tunnel carries traffic: the inet server sees the exit's address" via_tunnel "boot$$"
check "up wrote the container's resolv.conf (nameserver 192.0.2.2)" grep -q '^nameserver 192.0.2.2' "$ROOT/etc/resolv.conf"
mark_log
ctr dig +short +time=2 +tries=1 smolmix.test >/dev/null 2>&1 || true
check "a lookup the resolver way reaches dnsmasq through the tunnel (from 192.0.2.1)" only_from 192.0.2.1
reset_counters
probes
note "probes while connected: counter out $(leaked)"
check "nothing of the probes leaves by vc while connected" test "$(leaked)" -eq 0

pretty "" "kill -9 of up: ExecStopPost keeps the host closed, Restart= reconnects"
cur=$(cursor)
nr0=$(prop smolmix-vpn@test NRestarts)
reset_counters
ctr rm -f /run/smx-prober.stop
ctr sh -c 'while [ ! -e /run/smx-prober.stop ]; do
	ping -c 1 -W 1 -I vc 192.0.2.2; ping -c 1 -W 1 192.0.2.2; ping -6 -c 1 -W 1 2001:db8:1::2
	curl -s --max-time 1 -o /dev/null http://192.0.2.2/; curl -s --max-time 1 --interface vc -o /dev/null http://192.0.2.2/
	dig +time=1 +tries=1 @192.0.2.2 smolmix.test; done' >/dev/null 2>&1 &
PROBER=$!
# Traffic through the tunnel again (the server sees the exit): a request that left directly
# would not count.
traffic() { via_tunnel "after-kill$$" 1; }
t0=$(ms)
ctr sh -c "kill -9 $main"
restarted() { [[ $(prop smolmix-vpn@test NRestarts) -gt $nr0 ]]; }
check "systemd restarts the unit (NRestarts $nr0 -> more)" wait_for 30 restarted
check "traffic flows through the tunnel again" wait_for 60 traffic
t_traffic=$(secs_since "$t0")
new_up() { active && ! unit_is smolmix-vpn@test MainPID "$main"; }
check "the unit is active again, a new up" new_up
ctr touch /run/smx-prober.stop
wait "$PROBER" || true
note "kill -9 to traffic through the tunnel: $t_traffic s; probing throughout, counter out $(leaked)"
check "nothing left by vc from the kill to the reconnect" test "$(leaked)" -eq 0
klog=$(journal_since "$cur" smolmix-vpn@test.service smolmix-vpn-lockdown@test.service)
printf '%s\n' "$klog" >"$TMP/kill.log"
note "ExecStopPost: $(grep -m1 'kept closed' "$TMP/kill.log" || echo '(no line)')"
check "ExecStopPost (down --stale) said the host is kept closed" grep -q 'kept closed' "$TMP/kill.log"
check "the new up took over what the old one left" grep -q 'taking over' "$TMP/kill.log"
note "the lockdown unit ran again before the restarted up: $(grep -c '^blocked: ' "$TMP/kill.log") time(s)"
check "the restarted up carries traffic" via_tunnel "kill$$"

pretty "" "systemctl stop: the host opens"
cur=$(cursor)
check "systemctl stop exits 0" ctr systemctl stop smolmix-vpn@test
stopped_ok() { unit_is smolmix-vpn@test ActiveState inactive && unit_is smolmix-vpn@test Result success; }
check "the unit is inactive, Result=success" stopped_ok
check "ExecStopPost after the stop: nothing to undo (up undid everything itself)" \
	grep -qx 'nothing to undo' <<<"$(journal_since "$cur" smolmix-vpn@test.service)"
check "no kill switch, mark table, rules, routes, TUN or journal left" clean_host
check "the container's resolv.conf is back byte for byte" test "$(sha256sum <"$ROOT/etc/resolv.conf")" = "$RESOLV_SUM"
reset_counters
probes
note "probes after the stop: counter out $(leaked)"
check "positive control: after the stop the probes leave by vc" test "$(leaked)" -gt 0

pretty "" "the start limit: an up that keeps failing ends failed, the host still closed"
# tun = "smx-bad", the name of an interface that is already there (a veth pair of the
# container's own, no address, no route): each `up` connects, then cannot create its TUN.
# (Not the uplink's name: a kill switch for tun = "vc" accepts everything leaving vc.)
ctr ip link add smx-bad type veth peer name smx-bad-peer
printf 'ipr = "udp://198.51.100.1:%s"\ndns = ["192.0.2.2"]\ntun = "smx-bad"\n' "$PORT" >"$ROOT/etc/smolmix-vpn/bad.toml"
chmod 0644 "$ROOT/etc/smolmix-vpn/bad.toml"
cur=$(cursor)
t0=$(date +%s)
ctr systemctl start --no-block smolmix-vpn@bad
check "the unit ends failed" wait_for 90 unit_is smolmix-vpn@bad ActiveState failed
blog=$(journal_since "$cur" smolmix-vpn@bad.service)
note "failed after $(( $(date +%s) - t0 )) s, Result=$(prop smolmix-vpn@bad Result), $(grep -c 'Main process exited' <<<"$blog") starts; up said: $(grep -m1 'error' <<<"$blog" | cut -c1-150)"
check "by the start limit (systemd: \"Start request repeated too quickly\")" grep -q 'Start request repeated too quickly' <<<"$blog"
check "after each failure ExecStopPost kept the host closed" test "$(grep -c 'kept closed' <<<"$blog")" -ge 5
check "the kill switch is still there" killswitch
reset_counters
probes
note "probes after the unit failed: counter out $(leaked)"
check "nothing leaves after the unit failed" test "$(leaked)" -eq 0
st=$(status_text | head -2 | tr '\n' '|')
note "status: $st"
says_blocked() { grep -q blocked <<<"$st" && grep -q 'smolmix-vpn down' <<<"$st"; }
check "smolmix-vpn status says blocked and that smolmix-vpn down opens it" says_blocked
check "the failed starts left the interface smx-bad alone" ctr ip link show smx-bad
check "smolmix-vpn down exits 0" ctr smolmix-vpn down
reset_counters
probes
check "control: after down the probes leave" test "$(leaked)" -gt 0
check "nothing of ours is left" clean_host
ctr systemctl reset-failed smolmix-vpn@bad || true
check "poweroff: nspawn exits 0" power_off

# ---------------------------------------------------------------------------------------------
pretty "" "boot 3: the exit is not there yet"
stop_exit nymtun0
check "the container boots" boot noexit
[[ -n $LEADER ]] || abort "no container"
check "the boot probe ran" wait_for 30 active smx-bootprobe.service
check "the kill switch is in place" wait_for 30 killswitch
check "smolmix-vpn@test is activating, not failed" wait_for 30 unit_is smolmix-vpn@test ActiveState activating
boot_order
check "the lockdown's kill switch was in before network-pre.target and before vc came up" \
	sh -c "[ $lock_rc = 0 ] && [ $lock_exit -gt 0 ] && [ $lock_exit -le $netpre ] && [ $lock_exit -le $net_start ]"
blocked_status() { prop smolmix-vpn@test StatusText | grep -q '^connecting: .*blocked'; }
check "its Status= says it is connecting and the host is blocked" wait_for 30 blocked_status
note "Status=$(prop smolmix-vpn@test StatusText | cut -c1-200)"
probes
note "boot probe and probes while up waits for the exit: counter out $(leaked)"
check "nothing left by vc since boot, boot probe and probes included" test "$(leaked)" -eq 0
blocked_until() { status_text | grep -q 'blocked until connected'; }
check "smolmix-vpn status says blocked until connected" blocked_until
reset_counters
start_exit nymtun0 "$PORT"
t0=$(date +%s)
check "once the exit is there the unit becomes active by itself" wait_for 90 active
note "active $(( $(date +%s) - t0 )) s after the exit started; counter out meanwhile $(leaked)"
check "nothing left by vc meanwhile" test "$(leaked)" -eq 0
check "the tunnel carries traffic" via_tunnel "late$$"
check "poweroff with the tunnel up: nspawn exits 0" power_off
slog=$(journalctl -q --no-pager -o cat -D "$ROOT/var/log/journal" -b -0 -u smolmix-vpn@test.service 2>/dev/null | tail -n 5 || true)
note "at shutdown: $(tr '\n' '|' <<<"$slog")"
check "at shutdown the unit stopped cleanly (ExecStopPost: nothing to undo)" grep -q 'nothing to undo' <<<"$slog"

check "the host's /etc/resolv.conf is untouched" test "$( { stat -c '%F %a %u %g %s %Y' /etc/resolv.conf; readlink /etc/resolv.conf; sha256sum </etc/resolv.conf; } 2>&1)" = "$HOST_RESOLV"
note "the suite took $(( $(date +%s) - T_START )) s"
finish
