#!/bin/bash
# Per-app mode: `up --netns APP` puts the TUN into namespace APP; `exec` runs programs there.
# Nothing inside APP may reach anything except through the tunnel, and ns client (the "host"
# here) keeps its own routing, DNS and nftables untouched.
#
#  ns app (created by up)      ns client ("the host")                ns exit          ns inet
#  curl, dig, getent           smolmix-vpn up --netns app            smolmix-exit     http :80
#  via `smolmix-vpn exec`      (its sockets stay here)               198.51.100.1     dnsmasq :53
#  lo, smx0 ◀── TUN fd ──────  vc 198.51.100.2 ─── UDP :51820 only ─ ve · vi ───────  vo 192.0.2.2
#                              nft: count everything else leaving vc   masquerade     sees 192.0.2.1
#
# Each check prints "ok N - …" or "not ok N - …"; the last line is "N passed, N failed".

set -e
exec 3>&1
CURRENT_SUITE=perapp
source "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d /tmp/smx-perapp.XXXXXX)
app="smx-pa-$$" app2="smx-pb-$$" fake="smx-pf-$$"
cleanup() { rm -f "${STI:-}" "${CHK:-}"; for ns in "$app" "$app2" "$fake"; do ip netns del "$ns" 2>/dev/null || true; done; cleanup_all; }
trap cleanup EXIT
setup_topology "smx-pa-$$"
setup_exit_nat
start_exit nymtun0 51820
start_inet
PROBE=$(cd "$(dirname "$0")" && pwd)/unix_probe.py
PY=/usr/bin/python3    # what uid 65534 can run (a pyenv shim under /root is not readable)

# smolmix-vpn joins only ns client's network namespace (see start_client in lib.sh).
CLIENT_NET_ONLY=1
on_client() { nsenter --net="/run/netns/$c" "$@"; }
vpn() { on_client env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" "$@"; }
# Run through sudo by a user, exec reads only the default run dir, /run/smolmix-vpn. $VX runs
# a command (VAR=VALUE words first, as env takes them) as sudo would for uid 65534: in ns
# client, SUDO_UID and SUDO_GID set, the SMOLMIX_ variables gone (sudo's env_reset), and this
# suite's run dir bound at /run/smolmix-vpn in a mount namespace of the command's own. The
# host's /run is not changed: the directory is made (empty, root's, 0700, as `up` makes it)
# only where it is missing, as the mount point.
[[ -d /run/smolmix-vpn ]] || install -d -m 0700 /run/smolmix-vpn
VX=$TMP/as-sudo-user
cat >"$VX" <<EOS
#!/bin/sh
exec nsenter --net=/run/netns/$c unshare -m --propagation private sh -c 'mount --bind "\$0" /run/smolmix-vpn && exec "\$@"' \\
	"$TMP/run" env -u SMOLMIX_RUN_DIR -u SMOLMIX_STATE_DIR SUDO_UID=65534 SUDO_GID=65534 "\$@"
EOS
chmod 0700 "$VX"
# vx ARGS: `sudo smolmix-vpn exec ARGS` by uid 65534; vx_env VAR=VALUE... -- ARGS: with those set.
vx() { "$VX" "$SMX_BIN/smolmix-vpn" exec "$@"; }
vx_env() { local vars=(); while [[ $1 != -- ]]; do vars+=("$1"); shift; done; shift; "$VX" "${vars[@]}" "$SMX_BIN/smolmix-vpn" exec "$@"; }
# vr ARGS: `smolmix-vpn exec` by root itself, not under sudo: its options are its own.
vr() { on_client env -u SUDO_UID -u SUDO_GID -u PKEXEC_UID SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" exec "$@"; }
vr_env() { local vars=(); while [[ $1 != -- ]]; do vars+=("$1"); shift; done; shift; on_client env -u SUDO_UID -u SUDO_GID -u PKEXEC_UID "${vars[@]}" "$SMX_BIN/smolmix-vpn" exec "$@"; }

# The leak oracle: every packet leaving ns client by its physical link, except the transport
# itself (UDP to the exit's port) and the link's own neighbour discovery / MLD chatter.
n "$c" nft -f - <<-EOF
table inet leak {
	counter other {}
	chain out {
		type filter hook output priority 0; policy accept;
		oifname "vc" udp dport 51820 accept
		oifname "vc" icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report } accept
		oifname "vc" counter name other
	}
}
EOF
leaked() { n "$c" nft list counter inet leak other | grep -o 'packets [0-9]*' | cut -d' ' -f2; }
leak_reset() { n "$c" nft reset counter inet leak other >/dev/null; }

# Everything of the host's own configuration that per-app mode must leave alone.
host_state() {
	n "$c" ip rule show; n "$c" ip -6 rule show
	n "$c" ip route show table all; n "$c" ip -6 route show table all
	n "$c" ip -o link show | cut -d' ' -f2
	n "$c" nft -s list ruleset
	n "$c" cat /etc/resolv.conf
	sha256sum /etc/resolv.conf    # the real host's: up and exec run without ip netns exec's bind
}
t_host_same() { host_state >"$TMP/host.now" 2>&1; diff -u "$TMP/host.before" "$TMP/host.now"; }
t_only_tun() { [[ $(ip -n "$1" -o link show | cut -d' ' -f2 | tr -d ':' | sort | tr '\n' ' ') == "lo smx0 " ]]; }
t_only_lo() { [[ $(ip -n "$1" -o link show | cut -d' ' -f2 | tr -d ':' | tr '\n' ' ') == "lo " ]]; }
t_status_ns() { client_status >"$TMP/st.json"; grep -q "\"netns\": \"$app\"" "$TMP/st.json" && grep -q '"192.0.2.2"' "$TMP/st.json"; }
t_exec_no_tunnel() { ! vx -- true 2>"$TMP/notun.err" && grep -q 'no tunnel is running' "$TMP/notun.err"; }
t_ns_routes() {
	ip -n "$app" route show | grep -q '^default dev smx0' &&
	ip -n "$app" -6 route show | grep -q '^default dev smx0' &&
	[[ $(ip -n "$app" route show | wc -l) -eq 1 ]]
}
# last_client LOG: the client address of the newest request in an http.server log.
last_client() { grep '"GET ' "$1" | tail -1 | cut -d' ' -f1; }
t_in_curl() {
	[[ $(vx -- curl -sS --max-time 10 "http://192.0.2.2/mid.bin?perapp" | sha256sum) == $(sha256sum <"$TMP/www/mid.bin") ]] &&
	[[ $(last_client "$TMP/http.log") == 192.0.2.1 ]]
}
t_in_curl6() {
	vx -- curl -sS --max-time 10 -o /dev/null "http://[2001:db8:1::2]/mid.bin?perapp6" &&
	[[ $(last_client "$TMP/http6.log") == 2001:db8:1::1 ]]
}
t_in_dig() {
	[[ $(vx -- dig +short +time=2 +tries=2 smolmix.test A) == 192.0.2.80 ]] &&
	tail -n 3 "$TMP/dnsmasq.log" | grep 'query\[A\] smolmix.test' | tail -1 | grep -q 'from 192.0.2.1$'
}
t_in_getent() { vx -- getent ahostsv4 smolmix.test | grep -q '^192.0.2.80 '; }
t_no_leak() { [[ $(leaked) -eq 0 ]]; }
t_host_direct() {
	n "$c" curl -sS --max-time 10 -o /dev/null "http://192.0.2.2/mid.bin?host" &&
	[[ $(last_client "$TMP/http.log") == 198.51.100.2 ]] &&
	n "$c" dig +short +time=2 +tries=1 @192.0.2.2 smolmix.test | grep -q 192.0.2.80 &&
	(( $(leaked) > 0 ))
}
t_resolv() {
	vx -- cat /etc/resolv.conf >"$TMP/resolv.in"
	[[ $(grep -c '^nameserver' "$TMP/resolv.in") -eq 1 ]] && grep -q '^nameserver 192.0.2.2$' "$TMP/resolv.in"
}
t_priv() {
	vx -- sh -c 'id -u; id -g; grep -E "^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):" /proc/self/status' >"$TMP/priv"
	[[ $(sed -n 1p "$TMP/priv") == 65534 && $(sed -n 2p "$TMP/priv") == 65534 ]] &&
	[[ $(grep -c ':[[:space:]]*0000000000000000$' "$TMP/priv") -eq 5 ]] &&
	grep -q 'NoNewPrivs:[[:space:]]*1' "$TMP/priv"
}
t_refuse_root() { ! vr -- true 2>"$TMP/refuse.err" && grep -q -- '--user' "$TMP/refuse.err"; }
t_root_nocaps() {
	vr --user root -- sh -c 'id -u; grep ^CapEff: /proc/self/status' >"$TMP/rootcaps" &&
	[[ $(head -1 "$TMP/rootcaps") == 0 ]] && grep -q 'CapEff:[[:space:]]*0000000000000000' "$TMP/rootcaps"
}
# Under sudo, --user naming anyone but the caller is refused before anything runs.
t_sudo_user_root() {
	local out rc=0
	out=$(vx --user root -- id -u 2>"$TMP/sudoroot.err") || rc=$?
	cat "$TMP/sudoroot.err"
	(( rc != 0 )) && [[ -z $out ]] && grep -q 'only as that user' "$TMP/sudoroot.err"
}
t_sudo_user_self() { [[ $(vx --user nobody -- id -u) == 65534 && $(vx --user 65534 -- id -u) == 65534 ]]; }
# A run dir of someone's making: root's and private, so that lock.rs's checks pass, an `up`
# seemingly alive (a process holds its lock), and a status naming namespace $fake, which has
# only lo: all that exec asks of a real one. Which namespace a program ran in: its inode.
make_fake_run_dir() {
	ip netns add "$fake"
	install -d -m 0700 "$TMP/fake"
	sed "s/\"netns\": \"$app\"/\"netns\": \"$fake\"/" "$TMP/run/status.json" >"$TMP/fake/status.json"
	python3 -c 'import fcntl, sys, time
f = open(sys.argv[1], "w"); fcntl.flock(f, fcntl.LOCK_EX); print("locked", flush=True); time.sleep(600)' \
		"$TMP/fake/lock" >"$TMP/fakelock.out" 3>&- &
	echo $! >"$TMP/fakelock.pid"
	wait_for 5 grep -q locked "$TMP/fakelock.out" && grep -q "\"netns\": \"$fake\"" "$TMP/fake/status.json"
}
NSINO=(stat -L -c %i /proc/self/ns/net)
# ran_in NS: the inode read on stdin is namespace NS's.
ran_in() { local got; got=$(cat); echo "ran in $got; $1 is $(stat -L -c %i "/run/netns/$1")"; [[ $got == "$(stat -L -c %i "/run/netns/$1")" ]]; }
t_fake_control() { vr_env SMOLMIX_RUN_DIR="$TMP/fake" -- --user 65534 -- "${NSINO[@]}" | ran_in "$fake"; }
t_fake_env_ignored() {
	vx_env SMOLMIX_RUN_DIR="$TMP/fake" -- -- "${NSINO[@]}" 2>"$TMP/fake.err" | ran_in "$app" &&
	grep -q "ignored SMOLMIX_RUN_DIR=$TMP/fake" "$TMP/fake.err"
}
t_fake_flag_ignored() {
	vx --run-dir "$TMP/fake" --state-dir "$TMP/fake" -- "${NSINO[@]}" 2>"$TMP/fake.err" | ran_in "$app" &&
	grep -q "ignored --run-dir $TMP/fake, --state-dir $TMP/fake" "$TMP/fake.err"
}
t_fake_refused_without_up() {
	! vx_env SMOLMIX_RUN_DIR="$TMP/fake" -- -- "${NSINO[@]}" >"$TMP/fake.out" 2>"$TMP/fake.err" &&
	cat "$TMP/fake.err" && [[ ! -s $TMP/fake.out ]] &&
	grep -q "no tunnel is running .*SMOLMIX_RUN_DIR=$TMP/fake is ignored" "$TMP/fake.err"
}
t_open_run_dir_refused() {
	local rc=0
	chmod 0777 "$TMP/fake"
	vr_env SMOLMIX_RUN_DIR="$TMP/fake" -- --user 65534 -- true 2>"$TMP/open.err" || rc=$?
	chmod 0700 "$TMP/fake"
	cat "$TMP/open.err"
	(( rc != 0 )) && grep -q 'written by others' "$TMP/open.err"
}
t_status_alone_refused() {
	local pid; pid=$(cat "$TMP/fakelock.pid")
	kill "$pid" && rm "$TMP/fakelock.pid"
	wait "$pid" 2>/dev/null || true    # gone, and its lock with it
	! vr_env SMOLMIX_RUN_DIR="$TMP/fake" -- --user 65534 -- true 2>"$TMP/alone.err" &&
	cat "$TMP/alone.err" && grep -q 'no tunnel is running' "$TMP/alone.err"
}
t_concurrent() {
	# The output goes through our stdout: uid 65534 cannot write into $TMP.
	vx -- curl -sS --max-time 10 "http://192.0.2.2/mid.bin?par1" >"$TMP/par1" & local p1=$!
	vx -- curl -sS --max-time 10 "http://192.0.2.2/mid.bin?par2" >"$TMP/par2" & local p2=$!
	wait $p1 && wait $p2 && cmp -s "$TMP/par1" "$TMP/www/mid.bin" && cmp -s "$TMP/par2" "$TMP/www/mid.bin"
}
# No command: the user's login shell (/bin/sh for nobody), here fed its commands on stdin.
t_shell() {
	printf 'id -u\ncurl -sS --max-time 10 -o /dev/null -w "%%{http_code}\\n" http://192.0.2.2/mid.bin?shell\nexit 3\n' | vx >"$TMP/shell.out"
	[[ ${PIPESTATUS[1]} -eq 3 ]] && [[ $(cat "$TMP/shell.out") == $'65534\n200' ]] &&
	[[ $(last_client "$TMP/http.log") == 192.0.2.1 ]]
}
t_exit_status() { local rc=0; vx -- sh -c 'exit 7' || rc=$?; [[ $rc -eq 7 ]]; }
# The caller's terminal. Under script(1) our commands get a terminal of their own, as under a
# user's shell. The program exec starts gets a pty of its own when any of its stdin, stdout
# and stderr would be a terminal, and none of these is the caller's: it cannot push input into
# the caller's terminal (TIOCSTI, which this kernel allows: dev.tty.legacy_tiocsti=1; into its
# own pty it may) nor read what is typed there.
STI=$(mktemp /tmp/smx-sti.XXXXXX.py)
chmod 0644 "$STI"
cat >"$STI" <<-'EOP'
	import fcntl, sys, termios
	try:
	    fcntl.ioctl(2, termios.TIOCSTI, b"#")
	    print("INJECTED")
	except OSError as e:
	    print("refused errno", e.errno)
EOP
# What is waiting in the caller's terminal's input once the program is done. Besides what a
# program pushed, script(1) may have put there what it read from our stdin (seen: a NUL).
CHK=$(mktemp /tmp/smx-sti-check.XXXXXX.py)
chmod 0644 "$CHK"
cat >"$CHK" <<-'EOP'
	import os, select, termios
	old = termios.tcgetattr(2)
	new = termios.tcgetattr(2)
	new[3] &= ~(termios.ICANON | termios.ECHO)
	new[6][termios.VMIN], new[6][termios.VTIME] = 0, 0
	termios.tcsetattr(2, termios.TCSANOW, new)
	ready = select.select([2], [], [], 0.5)[0]
	print("caller's input:", repr(os.read(2, 64) if ready else b""))
	termios.tcsetattr(2, termios.TCSANOW, old)
EOP
in_terminal() { script -qec "$1" /dev/null; }
vx_line="$VX $SMX_BIN/smolmix-vpn exec"
# stdin a file: the pty only for stdout and stderr.
t_tiocsti() {
	in_terminal "$vx_line -- /usr/bin/python3 $STI </dev/null; /usr/bin/python3 $CHK" </dev/null >"$TMP/sti.out"
	grep -a "^caller's input: " "$TMP/sti.out" && ! grep -a "^caller's input: " "$TMP/sti.out" | grep -q '#'
}
t_tiocsti_control() {
	in_terminal "setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 $STI </dev/null; /usr/bin/python3 $CHK" </dev/null >"$TMP/sti-control.out"
	grep -a "^caller's input: " "$TMP/sti-control.out" | grep -q '#'
}
t_pty() {
	local outer inner
	# Only the device name: the terminal also echoes whatever script(1) read from our stdin
	# (seen: a NUL, echoed as "^@"), which depends on how the suite was started.
	outer=$(in_terminal "tty" </dev/null | grep -ao '/dev/pts/[0-9]*' | tail -n1)
	inner=$(in_terminal "$vx_line -- tty" </dev/null | grep -ao '/dev/pts/[0-9]*' | tail -n1)
	echo "caller's terminal $outer, the program's $inner"
	[[ $inner == /dev/pts/* && $outer == /dev/pts/* && $inner != "$outer" ]]
}
# Only stderr a terminal (`exec -- CMD </dev/null | tee LOG`): the pty takes stderr's place; the
# file and the pipe reach the program as they are.
t_pty_stderr() {
	local outer fds
	outer=$(in_terminal "readlink /proc/self/fd/2 </dev/null | cat" </dev/null | grep -ao '/dev/pts/[0-9]*' | tail -n1)
	fds=$(in_terminal "$vx_line -- readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2 </dev/null | cat" </dev/null | tr -d '\r')
	echo "caller's terminal $outer; the program's fds 0-2:" $fds
	[[ $outer == /dev/pts/* ]] && grep -qx /dev/null <<<"$fds" && grep -q '^pipe:' <<<"$fds" &&
	[[ $(grep -ao '^/dev/pts/[0-9]*' <<<"$fds") == /dev/pts/* && $(grep -ao '^/dev/pts/[0-9]*' <<<"$fds") != "$outer" ]]
}
t_pty_status() { local rc=0; in_terminal "$vx_line -- sh -c 'echo hello; exit 7'" >"$TMP/pty.out" || rc=$?; [[ $rc -eq 7 ]] && grep -q hello "$TMP/pty.out"; }
t_wrong_ns() { ! vx --netns smx-nope -- true 2>"$TMP/wrongns.err" && grep -q 'smx-nope' "$TMP/wrongns.err"; }
# The host's resolver sockets: a private /run (so the host's is never touched) holding stand-ins
# for nscd's socket and resolved's varlink socket. Plain `ip netns exec` reaches them (the
# positive control); programs started by `smolmix-vpn exec` must not.
t_resolver_sockets() {
	on_client unshare -m --propagation private bash -s "$TMP" "$app" "$PROBE" "$SMX_BIN" "$PY" "$VX" <<-'EOS' >"$TMP/sockets.out" 2>&1
	set -e
	T=$1 APP=$2 PROBE=$3 BIN=$4 PY=$5 VX=$6
	socks="/run/systemd/resolve/io.systemd.Resolve /run/nscd/socket"
	mkdir -p "$T/netns-keep" && mount --rbind /run/netns "$T/netns-keep"
	mount -t tmpfs tmpfs /run
	mkdir -p /run/netns /run/systemd/resolve /run/nscd /run/smolmix-vpn && mount --rbind "$T/netns-keep" /run/netns
	cp "$PROBE" /run/unix_probe.py && PROBE=/run/unix_probe.py    # readable by uid 65534
	"$PY" "$PROBE" listen $socks >"$T/listen.out" &
	for _ in $(seq 100); do grep -q ready "$T/listen.out" && break; sleep 0.05; done
	echo "control:"; ip netns exec "$APP" setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" "$PROBE" connect $socks
	echo "exec:"; "$VX" "$BIN/smolmix-vpn" exec -- "$PY" "$PROBE" connect $socks
	kill %1
	EOS
	[[ $(sed -n '/^control:/,/^exec:/p' "$TMP/sockets.out" | grep -c ' reached$') -eq 2 ]] &&
	[[ $(sed -n '/^exec:/,$p' "$TMP/sockets.out" | grep -c ' ENOENT$') -eq 2 ]]
}
# nsswitch.conf: a host whose hosts line asks daemons outside the namespace (resolve, mdns).
# In a private mount namespace (the host's file is never touched) such a file covers
# /etc/nsswitch.conf; plain `ip netns exec` sees it (the positive control), exec's program must
# see `hosts: files dns`, with the passwd line kept.
t_nsswitch() {
	on_client unshare -m --propagation private bash -s "$TMP" "$app" "$SMX_BIN" "$VX" <<-'EOS' >"$TMP/nss.out" 2>&1
	set -e
	T=$1 APP=$2 BIN=$3 VX=$4
	printf 'passwd: files smolmixtest\nhosts: files mdns4_minimal [NOTFOUND=return] resolve dns\n' >"$T/nsswitch.fake"
	chmod 0644 "$T/nsswitch.fake"
	mount --bind "$T/nsswitch.fake" /etc/nsswitch.conf
	echo "control: $(ip netns exec "$APP" grep '^hosts:' /etc/nsswitch.conf)"
	echo "exec: $("$VX" "$BIN/smolmix-vpn" exec -- grep -E '^(hosts|passwd):' /etc/nsswitch.conf | paste -sd ';')"
	EOS
	grep -q '^control: hosts: files mdns4_minimal' "$TMP/nss.out" &&
	grep -qx 'exec: passwd: files smolmixtest;hosts: files dns' "$TMP/nss.out"
}
t_v6_fast_fail() {
	local t0 t1
	t0=$(date +%s%N)
	! vx -- curl -sS --max-time 5 -o /dev/null "http://[2001:db8:1::2]/?v6off" 2>"$TMP/v6off.err"
	t1=$(date +%s%N)
	(( (t1 - t0) / 1000000 < 1000 )) && ip -n "$app2" -6 route show | grep -q '^unreachable default'
}
t_refuse_busy() {
	! vpn up --ipr udp://198.51.100.1:51820 --netns "$app2" --no-dns 2>"$TMP/busy.err" &&
	grep -q 'smxd0' "$TMP/busy.err" && ip -n "$app2" link show smxd0 >/dev/null && t_host_same
}
t_ns_gone() { [[ ! -e /run/netns/$1 ]] && ! ip netns list | grep -q "^$1\( \|$\)"; }

host_state >"$TMP/host.before" 2>&1

# The caller's environment: what a program expects passes, secrets and loader variables do not.
t_env() {
	local seen
	seen=$(vx_env TERM=xterm-test LC_TIME=C.UTF-8 API_TOKEN=s3cret LD_PRELOAD=/nonexistent.so -- -- env)
	echo "$seen"
	grep -qx 'TERM=xterm-test' <<<"$seen" && grep -qx 'LC_TIME=C.UTF-8' <<<"$seen" &&
	grep -qx 'HOME=/nonexistent' <<<"$seen" && grep -q '^PATH=' <<<"$seen" &&
	! grep -q 'API_TOKEN\|LD_PRELOAD\|SUDO_\|SMOLMIX_RUN_DIR' <<<"$seen"
}

pretty "$c" "up --netns $app"
start_client --ipr udp://198.51.100.1:51820 --netns "$app" --dns 192.0.2.2 --dns-check-name smolmix.test
check "up says the TUN is up inside namespace $app" grep -q "smx0 in namespace $app is up" "$TMP/client.out"
check "the DNS check passed from inside the namespace" wait_for 10 grep -q '^dns: ok' "$TMP/client.out"
check "the namespace holds only lo and the TUN" t_only_tun "$app"
check "its default routes (IPv4 and IPv6) go into the TUN, and there is no other route" t_ns_routes
check "the host's rules, routes, links, nftables and resolv.conf are untouched" t_host_same
check "status shows the namespace and its DNS" t_status_ns

pretty "$app" "programs inside, started with smolmix-vpn exec"
leak_reset
check "exec curl: 1 MB, sha256 matches, the server sees the exit's address" t_in_curl
check "exec curl -6: the server sees the exit's IPv6 address" t_in_curl6
check "exec dig: answered by dnsmasq, which saw the query come from the exit" t_in_dig
check "exec getent hosts: name lookup through nss and the tunnel" t_in_getent
check "zero packets of the namespace's traffic on the client's physical link" t_no_leak
check "positive control: the same curl and dig from the host go direct and the counter sees them" t_host_direct
check "resolv.conf inside lists only the tunnel's DNS server" t_resolv
check "resolver sockets: reachable by plain ip netns exec (control), absent under exec" t_resolver_sockets
check "the command runs as the sudo user, with no capabilities and no_new_privs" t_priv
check "as root without sudo, exec refuses and asks for --user" t_refuse_root
check "--user root (root not under sudo) runs with no effective capabilities" t_root_nocaps
check "under sudo, --user root is refused and nothing runs (control: root itself, above)" t_sudo_user_root
check "under sudo, --user naming the caller, by name or uid, runs" t_sudo_user_self
check "a fake run dir (root's, 0700, its lock held, status naming $fake) is set up" make_fake_run_dir
check "positive control: root not under sudo follows SMOLMIX_RUN_DIR there, into $fake" t_fake_control
check "under sudo, SMOLMIX_RUN_DIR is ignored, said so, and the real tunnel's namespace used" t_fake_env_ignored
check "under sudo, --run-dir and --state-dir are ignored, said so, and the real one used" t_fake_flag_ignored
check "a run dir others can write is refused by exec too" t_open_run_dir_refused
check "two exec calls share the namespace at the same time" t_concurrent
check "exec passes the command's exit status through (7)" t_exit_status
check "exec clears the environment but for an allowlist (TERM, LANG, LC_*; no secrets, no LD_PRELOAD)" t_env
check "exec with no command starts a shell whose programs use the tunnel" t_shell
check "exec --netns of another namespace is refused, naming it" t_wrong_ns
check "nsswitch.conf inside: hosts by files and dns only, other databases kept (control: the host's line outside)" t_nsswitch
check "positive control: a program on the caller's terminal can push input into it (TIOCSTI)" t_tiocsti_control
check "a program started by exec cannot (a session and a pty of its own)" t_tiocsti
check "with a terminal, the program gets a pty of its own, not the caller's" t_pty
check "with only stderr a terminal, the program's stderr is a pty of its own; stdin and stdout pass as they are" t_pty_stderr
check "through the pty, its output and exit status (7) come back" t_pty_status

pretty "$c" "stop"
check "SIGTERM stops the client with exit status 0" stop_client
check "the namespace up created is gone" t_ns_gone "$app"
check "the host's configuration is byte-for-byte what it was" t_host_same
check "exec without a running tunnel says so" t_exec_no_tunnel
check "under sudo with no tunnel running, the fake run dir is still ignored: refused, naming it" t_fake_refused_without_up
check "a status file whose lock nobody holds is no tunnel" t_status_alone_refused

pretty "$c" "a namespace that already exists, with --ipv6 off"
ip netns add "$app2"
ip -n "$app2" link add smxd0 type veth peer name smxd1
check "an existing namespace with another interface is refused, naming it, and left as it was" t_refuse_busy
ip -n "$app2" link del smxd0
start_client --ipr udp://198.51.100.1:51820 --netns "$app2" --ipv6 off --dns 192.0.2.2
check "IPv4 goes through the tunnel" vx -- curl -sS --max-time 10 -o /dev/null "http://192.0.2.2/mid.bin?v6off"
leak_reset
check "--ipv6 off: curl -6 inside fails in under 1 s (unreachable, not a hang)" t_v6_fast_fail
check "--ipv6 off: nothing left by the physical link meanwhile" t_no_leak
check "SIGTERM stops the client with exit status 0" stop_client
check "a namespace that existed before up is kept, with only lo left in it" t_only_lo "$app2"
check "host configuration unchanged" t_host_same
ip netns del "$app2"

pretty "$c" "crash"
start_client --ipr udp://198.51.100.1:51820 --netns "$app" --dns 192.0.2.2
kill -9 "$CLIENT_PID"; wait "$CLIENT_PID" 2>/dev/null || true
check "after SIGKILL the namespace is still there (positive control)" test -e "/run/netns/$app"
check "smolmix-vpn down removes it" vpn down
check "the namespace is gone after down" t_ns_gone "$app"
check "host configuration unchanged after the crash and down" t_host_same

finish
