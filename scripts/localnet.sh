#!/bin/bash
# A local, offline Nym network of real nym-node processes, in network namespaces: three
# mixnodes, one exit gateway running the real IP Packet Router (IPR), the project's directory
# stand-in (smolmix-directory, in place of nym-api) and an "internet" behind the gateway.
# For the tests, benchmarks and demos that need the real mixnet rather than smolmix-exit.
#
#   sudo scripts/localnet.sh up                 build it, wait until every part answers, write
#                                               $LOCALNET_DIR/localnet.env, return (it keeps running)
#   scripts/localnet.sh env                     print localnet.env (sourceable: everything tests need)
#   sudo scripts/localnet.sh status             each process and whether it answers (exit 1 if not all)
#   sudo scripts/localnet.sh gateway-stop       stop the gateway's nym-node (a gateway fault)
#   sudo scripts/localnet.sh gateway-start      start it again, same keys; wait until it is ready
#   sudo scripts/localnet.sh directory-restart  restart the directory stand-in (e.g. with another
#                                               LOCALNET_GW_VERSION)
#   sudo scripts/localnet.sh down               stop every process, delete every namespace, remove
#                                               the state dir; idempotent, also after a failed up
#
#                        ns $P-lan: bridge br0, 198.18.0.0/24
#  ns $P-client     eth0 198.18.0.100 ─┤  for tests: smolmix-vpn up, the library, curl …;
#                                      │  default route via 198.18.0.14 (the "physical link")
#  ns $P-directory  eth0 198.18.0.20  ─┤  smolmix-directory :8000 (the nym-api stand-in)
#  ns $P-mix1       eth0 198.18.0.11  ─┤  nym-node --mode mixnode, layer 1   (HTTP API :8080)
#  ns $P-mix2       eth0 198.18.0.12  ─┤  nym-node --mode mixnode, layer 2
#  ns $P-mix3       eth0 198.18.0.13  ─┤  nym-node --mode mixnode, layer 3
#  ns $P-gw         eth0 198.18.0.14  ─┘  nym-node --mode exit-gateway: client websocket :9000,
#                                         IPR nymtun0 10.0.0.1/16 + fc00::1/112, forwarding,
#                                         masquerade (NAT44, NAT66) of both pools out of up0
#                   up0 198.18.1.1/24 ───────────── eth0 198.18.1.2/24       ns $P-inet
#                       2001:db8:1::1/64                 2001:db8:1::2/64, route 198.18.0.0/24
#                                                   lo: 203.0.113.80, 2001:db8:113::80  HTTP :80
#                                                       203.0.113.81  HTTP :80 (same files, own log)
#                                                       203.0.113.53, 2001:db8:113::53  dnsmasq
#                                                       203.0.113.7  UDP and TCP echo :7
#                                                       203.0.113.9  TCP upload sink :9000
#                                                       203.0.113.88 WebSocket echo :8765
#                                                       203.0.113.5  iperf3 -s
#
# $P is smx-ln<pid of the `up` run>, so the test runner's leftover check sees the namespaces.
# Servers in ns inet see tunnelled traffic only as 198.18.1.1 / 2001:db8:1::1 (the IPR's pools
# are masqueraded). Without the tunnel ns client still reaches ns inet, over IPv4, by the
# "physical link": its default route via the gateway's bridge address, forwarded by ns gw
# without NAT, so servers then log 198.18.0.100. Leak tests use that path as their positive
# control, split-tunnel tests tell the two paths apart by it. The files under www: small.bin
# (100 kB), mid.bin (1 MB), big10.bin (10 MB), random, with SHA256SUMS. dnsmasq answers
# smolmix.test and nymtech.net (the HTTP server) and gw.smolmix.test (198.18.0.14), and logs
# every query. Only the benchmarking range (RFC 2544) and documentation ranges (RFC 5737,
# RFC 3849) are used, plus the IPR's own fixed pools, only inside namespaces this script made.
#
# Environment:
#   LOCALNET_DIR         state dir (default /tmp/smolmix-localnet): localnet.env, logs, node
#                        keys (nym-node runs with HOME=$LOCALNET_DIR/home), the served files
#   KEEP_LOCALNET_DIR=1  down (and a failed up) keep the state dir, e.g. for its logs
#   NYM_NODE             the nym-node binary; else ../shared/nym-localnet/nym-node beside the
#                        repository (checked against nym-node.sha256), else built from NYM_SRC
#   NYM_SRC              a nym source tree at nym-binaries-v2026.9-venaco, built on first use
#   SMX_BIN              the project's binaries (default <repo>/target/release)
#   SMX_DIRECTORY        the directory stand-in (default $SMX_BIN/smolmix-directory)
#   LOCALNET_GW_VERSION  the version the directory announces for the gateway (default: the
#                        nym-node's own); `up` and `directory-restart` read it
#   LOCALNET_GW_HOSTNAME a hostname the directory announces for the gateway besides its address
#                        (e.g. gw.smolmix.test, which dnsmasq resolves); `up` and
#                        `directory-restart` read it
#   LOCALNET_SERVER_LIFETIME  seconds after which the python echo servers and the sink stop by
#                        themselves (bounded, like every test server; default 86400)
#
# What nym-node (1.31.0) taught us, as used below:
# - It cannot start without a nym-api: init and run fetch the key-rotation info and the
#   topology and exit if that fails; hence the stand-in, started before any node.
# - The exit gateway's embedded IPR and network-requester clients ignore --nym-api-urls and
#   read the network from the environment (mainnet's nym-apis by default), then hang offline:
#   no nymtun0 ever appears. So every invocation gets --config-env-file with NYM_APIS set, in
#   single quotes: the env-file parser strips double quotes, and the JSON then fails to parse
#   (logged as "failed to parse api urls from env"; it falls back to NYM_API).
# - --local (and the other flags) are not saved into the config: pass them on every run
#   (--mode too is accepted again on a run of an initialised node).
# - Without --lp-use-mock-ecash true the gateway dials nyxd at start and dies.
# - A first SIGTERM or SIGINT flushes its state at once, then waits 10 s for tasks that never
#   finish ("timeout reached - forcing shutdown"); a second signal, SIGINT only (a second
#   SIGTERM is ignored), forces the exit within a second or two. Stops here: SIGTERM, SIGINT,
#   SIGKILL, each after a bounded wait.
# - On this machine (2 cores) init takes ~4 s for all four nodes at once; a started node
#   answers within a second, and the gateway's IPR makes nymtun0 right after its websocket.
# - The network is never idle: the gateway's embedded IPR and NR clients send cover traffic
#   (~20 packets/s through every mixnode). The gateway counts what comes back as final-hop
#   packets, in /api/v1/metrics/packets-stats; its /metrics/mixing "received" stays 0.
set -e
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=$(realpath -m "${LOCALNET_DIR:-/tmp/smolmix-localnet}")
SMX_BIN=${SMX_BIN:-$REPO/target/release}
SMX_DIRECTORY=${SMX_DIRECTORY:-$SMX_BIN/smolmix-directory}
SHARED_NYM_NODE=$REPO/../shared/nym-localnet/nym-node

API_IP=198.18.0.20
NYM_API=http://$API_IP:8000/
declare -A IP=([client]=198.18.0.100 [directory]=$API_IP [mix1]=198.18.0.11 [mix2]=198.18.0.12
	[mix3]=198.18.0.13 [gw]=198.18.0.14)
NODES=(mix1 mix2 mix3 gw)
NAMESPACES=(lan client directory mix1 mix2 mix3 gw inet)
SERVERS=(http http6 http_alt dns udp_echo tcp_echo sink ws_echo iperf3)
HTTP_IP=203.0.113.80 HTTP_IP6=2001:db8:113::80 DNS_IP=203.0.113.53 DNS_IP6=2001:db8:113::53
HTTP_ALT_IP=203.0.113.81 ECHO_IP=203.0.113.7 SINK_IP=203.0.113.9 SINK_PORT=9000
WS_IP=203.0.113.88 WS_PORT=8765 IPERF_IP=203.0.113.5 GW_HOSTNAME_DNS=gw.smolmix.test
LIFETIME=${LOCALNET_SERVER_LIFETIME:-86400}

say() { echo "[localnet] $*"; }
warn() { echo "[localnet] $*" >&2; }
die() { warn "$*"; exit 1; }
nx() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

# Elapsed time with a tenth of a second: since START (microseconds from now_us).
now_us() { echo "${EPOCHREALTIME/./}"; }
since() { local d=$((($(now_us) - $1) / 100000)); echo "$((d / 10)).$((d % 10)) s"; }

# alive PID: the process exists and is not a zombie.
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $s != Z* ]]; }

# wait_until SECONDS PID cmd...: polls until cmd succeeds (never a fixed sleep). Returns 1
# after SECONDS, 2 as soon as process PID (unless empty) is gone.
wait_until() {
	local deadline=$(($(date +%s) + $1)) pid=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		[[ -z $pid ]] || alive "$pid" || return 2
		(($(date +%s) < deadline)) || return 1
		sleep 0.1
	done
}

# ready WHO WHAT SECONDS PID LOG cmd...: waits for cmd, prints "WHO up (WHAT) after N s" (time
# since READY_T0, when the process was started, else since the call), or on failure why and the
# tail of LOG, and fails.
ready() {
	local who=$1 what=$2 secs=$3 pid=$4 log=$5 t0=${READY_T0:-$(now_us)} rc=0
	shift 5
	wait_until "$secs" "$pid" "$@" || rc=$?
	case $rc in
	0) say "$who up ($what) after $(since "$t0")"; return 0 ;;
	1) warn "$who: not up ($what) within $secs s" ;;
	*) warn "$who: its process exited before it was up ($what)" ;;
	esac
	if [[ -n $log && -f $log ]]; then
		warn "last lines of $log:"
		tail -n 30 "$log" | sed 's/^/  | /' >&2
	fi
	return 1
}

# daemon NAME NS LOG cmd...: starts cmd in ns $P-NS, in a session of its own (it outlives this
# script and no terminal signal reaches it), output appended to LOG; its pid in pids/NAME.pid.
daemon() {
	local name=$1 ns=$2 log=$3
	shift 3
	setsid ip netns exec "$P-$ns" "$@" </dev/null >>"$log" 2>&1 &
	echo $! >"$W/pids/$name.pid"
}

pid_of() { cat "$W/pids/$1.pid" 2>/dev/null; }

# running NAME: the process started as NAME still runs, in our namespace (not a recycled pid).
running() {
	local pid ns
	pid=$(pid_of "$1") && alive "$pid" || return 1
	ns=$(ip netns identify "$pid" 2>/dev/null) && [[ $ns == "$P-"* ]]
}

# stop_pids SECONDS PID...: SIGTERM; after up to 2 s a SIGINT to those left (nym-node answers
# a first signal by waiting 10 s for tasks that never finish; a second one, SIGINT only, forces
# it: "received interrupt - forcing shutdown", and it exits a second or two later); after up to
# SECONDS more, SIGKILL (bounded too). Sets STOPPED_HOW to how they went.
stop_pids() {
	local secs=$1 p left=() still=()
	shift
	STOPPED_HOW=SIGTERM
	(($#)) || return 0
	kill -TERM "$@" 2>/dev/null || true
	wait_until 2 "" none_alive "$@" && return 0
	for p in "$@"; do if alive "$p"; then left+=("$p"); fi; done
	kill -INT "${left[@]}" 2>/dev/null || true
	STOPPED_HOW="SIGTERM, then SIGINT to ${#left[@]}"
	wait_until "$secs" "" none_alive "${left[@]}" && return 0
	for p in "${left[@]}"; do if alive "$p"; then still+=("$p"); fi; done
	kill -KILL "${still[@]}" 2>/dev/null || true
	STOPPED_HOW+=", SIGKILL to ${#still[@]}"
	wait_until 5 "" none_alive "${still[@]}" || warn "processes still alive after SIGKILL: ${still[*]}"
}
none_alive() { local p; for p; do ! alive "$p" || return 1; done; }

need_root() { [[ $(id -u) -eq 0 ]] || die "localnet.sh $1 needs root (network namespaces): sudo $0 $1"; }

# The state of a running network: namespace prefix and the binaries `up` chose.
load_state() {
	[[ -f $W/state ]] || return 1
	# shellcheck source=/dev/null
	source "$W/state"
	NYM=(env HOME="$W/home" "$NYM_NODE" --no-banner --config-env-file "$W/nym.env")
}
any_namespace() { local ns; for ns in "${NAMESPACES[@]}"; do [[ -e /run/netns/$P-$ns ]] && return 0; done; return 1; }

# --- nym-node: which binary ---------------------------------------------------------------------

# Sets NYM_NODE, or explains the three ways to provide one and exits 2.
find_nym_node() {
	if [[ -n ${NYM_NODE:-} ]]; then
		[[ -x $NYM_NODE ]] || die "NYM_NODE=$NYM_NODE is not an executable file"
		NYM_NODE=$(realpath "$NYM_NODE")
	elif [[ -x $SHARED_NYM_NODE ]]; then
		NYM_NODE=$(realpath "$SHARED_NYM_NODE")
		if [[ -f $NYM_NODE.sha256 ]]; then
			(cd "$(dirname "$NYM_NODE")" && sha256sum --quiet -c "$(basename "$NYM_NODE").sha256") ||
				die "$NYM_NODE does not match $NYM_NODE.sha256"
		fi
	elif [[ -n ${NYM_SRC:-} ]]; then
		build_nym_node
		NYM_NODE=$NYM_SRC/target/release/nym-node
	else
		cat >&2 <<-EOF
		[localnet] no nym-node binary. Provide one of:
		  1. NYM_NODE=/path/to/nym-node (release 1.31.0, tag nym-binaries-v2026.9-venaco)
		  2. the prebuilt one at $(realpath -m "$SHARED_NYM_NODE") (with nym-node.sha256 beside it)
		  3. NYM_SRC=/path/to/nym, a clone of https://github.com/nymtech/nym at tag
		     nym-binaries-v2026.9-venaco: built here on first use (30-60 min on 2 cores)
		EOF
		exit 2
	fi
}

# The recorded recipe (docs/localnet.md §3). The workspace has no git dependencies,
# so after `cargo fetch --locked` the build is offline, except one build script: utoipa-swagger-ui
# downloads swagger-ui from GitHub unless SWAGGER_UI_DOWNLOAD_URL points at a local copy; the
# same zip ships inside the crates.io crate utoipa-swagger-ui-vendored 0.1.2 (res/v5.17.14.zip).
# Runs as the user who ran sudo (their rustup toolchain in ~/.cargo/bin, their cargo registry,
# no root-owned target/).
build_nym_node() {
	[[ -f $NYM_SRC/Cargo.toml && -d $NYM_SRC/nym-node ]] || die "NYM_SRC=$NYM_SRC is not a nym source tree"
	NYM_SRC=$(realpath "$NYM_SRC")
	say "building nym-node in $NYM_SRC (cargo, release; 30-60 min the first time)"
	local t0 recipe as=()
	t0=$(now_us)
	# shellcheck disable=SC2016  # expanded by the shell that runs the recipe
	recipe='set -e
		export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
		cd "$1"
		cargo fetch --locked
		zip=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/utoipa-swagger-ui-vendored-0.1.2/res/v5.17.14.zip 2>/dev/null | head -n 1)
		if [ -z "$zip" ]; then
			echo "utoipa-swagger-ui-vendored 0.1.2 is not in the cargo registry: cargo fetch it (it ships swagger-ui v5.17.14)" >&2
			exit 1
		fi
		SWAGGER_UI_DOWNLOAD_URL="file://$zip" cargo build --release --locked --offline -p nym-node'
	[[ -z ${SUDO_USER:-} || $SUDO_USER == root ]] || as=(runuser -u "$SUDO_USER" --)
	"${as[@]}" bash -c "$recipe" build-nym-node "$NYM_SRC" || die "building nym-node in $NYM_SRC failed"
	[[ -x $NYM_SRC/target/release/nym-node ]] || die "no $NYM_SRC/target/release/nym-node after the build"
	say "nym-node built after $(since "$t0")"
}

# --- up ------------------------------------------------------------------------------------------

# Refuses a second network on the same state dir.
refuse_if_up() {
	load_state || return 0
	if any_namespace; then
		die "a localnet from $W is already up (namespaces $P-*): take it down first with: sudo $0 down"
	fi
	die "$W holds the state of a localnet whose namespaces ($P-*) are gone: clean up with: sudo $0 down"
}

# The state dir must be ours or new: a kept one (KEEP_LOCALNET_DIR) is replaced, anything else
# is refused rather than deleted.
make_state_dir() {
	if [[ -f $W/.smolmix-localnet ]]; then
		rm -rf "$W"
	elif [[ -e $W ]] && [[ ! -d $W || -n $(ls -A "$W") ]]; then
		die "$W exists and is not a localnet state dir: choose another LOCALNET_DIR"
	fi
	mkdir -p "$W"/{pids,log,home,www}
	: >"$W/.smolmix-localnet"
}

# The env file every nym-node invocation reads (--config-env-file): mainnet.env's shape (the
# contract addresses are never used offline) with every URL pointing at the stand-in. NYM_APIS
# is what the embedded IPR and network requester read; NYXD is never answered (mock ecash).
# The env-file parser strips double quotes, so the JSON of NYM_APIS goes in single quotes
# (unquoted, nym-node logs "failed to parse api urls from env" and falls back to NYM_API).
write_nym_env() {
	cat >"$W/nym.env" <<-EOF
	CONFIGURED=true
	NETWORK_NAME=mainnet
	RUST_LOG=info
	RUST_BACKTRACE=1
	BECH32_PREFIX=n
	MIX_DENOM=unym
	MIX_DENOM_DISPLAY=nym
	STAKE_DENOM=unyx
	STAKE_DENOM_DISPLAY=nyx
	DENOMS_EXPONENT=6
	MIXNET_CONTRACT_ADDRESS=n17srjznxl9dvzdkpwpw24gg668wc73val88a6m5ajg6ankwvz9wtst0cznr
	VESTING_CONTRACT_ADDRESS=n1nc5tatafv6eyq7llkr2gv50ff9e22mnf70qgjlv737ktmt4eswrq73f2nw
	GROUP_CONTRACT_ADDRESS=n1e2zq4886zzewpvpucmlw8v9p7zv692f6yck4zjzxh699dkcmlrfqk2knsr
	ECASH_CONTRACT_ADDRESS=n1r7s6aksyc6pqardx88k3rkgfagwvj4z4zum9mmz2sfk3zm2mha0sd4dnun
	MULTISIG_CONTRACT_ADDRESS=n1txayqfz5g9qww3rlflpg025xd26m9payz96u54x4fe3s2ktz39xqk67gzx
	COCONUT_DKG_CONTRACT_ADDRESS=n19604yflqggs9mk2z26mqygq43q2kr3n932egxx630svywd5mpxjsztfpvx
	REWARDING_VALIDATOR_ADDRESS=n10yyd98e2tuwu0f7ypz9dy3hhjw7v772q6287gy
	STATISTICS_SERVICE_DOMAIN_ADDRESS=http://$API_IP:8000
	NYXD=http://$API_IP:26657
	NYM_API=$NYM_API
	NYXD_WS=ws://$API_IP:26657/websocket
	NYM_VPN_API=$NYM_API
	UPGRADE_MODE_ATTESTER_ED25519_PUBKEY=3bgffBYcfFkTTXc2npNNn9MkddFZ3H2LrPjXDmnJzrqd
	NYM_APIS='[{"url":"$NYM_API","front_hosts":null}]'
	EOF
}

make_namespaces() {
	local t0 n
	t0=$(now_us)
	# `ip netns exec` binds /etc/netns/NS/resolv.conf over /etc/resolv.conf: programs in ns
	# client and gw resolve with the inet's dnsmasq, and smolmix-vpn's DNS handling in ns client
	# never touches the host's file.
	for n in client gw; do
		mkdir -p "/etc/netns/$P-$n"
		printf 'nameserver %s\n' "$DNS_IP" >"/etc/netns/$P-$n/resolv.conf"
	done
	for n in "${NAMESPACES[@]}"; do
		ip netns add "$P-$n"
		nx "$n" ip link set lo up
	done
	nx lan ip link add br0 type bridge
	nx lan ip link set br0 up
	for n in client directory "${NODES[@]}"; do
		ip link add eth0 netns "$P-$n" type veth peer name "v-$n" netns "$P-lan"
		nx lan ip link set "v-$n" master br0 up
		nx "$n" ip addr add "${IP[$n]}/24" dev eth0
		nx "$n" ip link set eth0 up
	done
	ip link add up0 netns "$P-gw" type veth peer name eth0 netns "$P-inet"
	nx gw ip addr add 198.18.1.1/24 dev up0
	nx gw ip -6 addr add 2001:db8:1::1/64 dev up0 nodad
	nx inet ip addr add 198.18.1.2/24 dev eth0
	nx inet ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad
	nx gw ip link set up0 up
	nx inet ip link set eth0 up
	for n in "$HTTP_IP" "$HTTP_ALT_IP" "$DNS_IP" "$ECHO_IP" "$SINK_IP" "$WS_IP" "$IPERF_IP"; do
		nx inet ip addr add "$n/32" dev lo
	done
	for n in "$HTTP_IP6" "$DNS_IP6"; do nx inet ip -6 addr add "$n/128" dev lo nodad; done
	nx gw ip route add default via 198.18.1.2
	nx gw ip -6 route add default via 2001:db8:1::2
	# The physical link: ns client reaches ns inet through ns gw, routed, not masqueraded.
	nx client ip route add default via "${IP[gw]}"
	nx inet ip route add 198.18.0.0/24 via 198.18.1.1
	nx gw sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	# The IPR's pools (fixed by the IPR) leave masqueraded: servers see only the uplink address.
	nx gw nft -f - <<-EOF
	table inet smx_localnet {
		chain post {
			type nat hook postrouting priority srcnat; policy accept;
			oifname "up0" ip saddr 10.0.0.0/16 masquerade
			oifname "up0" ip6 saddr fc00::/112 masquerade
		}
	}
	EOF
	say "namespaces $P-{${NAMESPACES[*]}} made (bridge, uplink, NAT44/NAT66, direct path) in $(since "$t0")"
}

listens() { nx inet ss -Hln"$1" | grep -qF "$2 "; }
dns_listens() { listens u "$DNS_IP:53" && listens u "[$DNS_IP6]:53"; }

# serve NAME WHAT PROTO IP:PORT cmd...: starts a server in ns inet (log $W/log/NAME.log) and
# waits until it listens: readiness by the listening socket, as a probe request would land in
# the logs tests read.
serve() {
	local name=$1 what=$2 proto=$3 addr=$4 READY_T0
	shift 4
	READY_T0=$(now_us)
	daemon "$name" inet "$W/log/$name.log" "$@"
	ready "$what" "listens on $addr" 10 "$(pid_of "$name")" "$W/log/$name.log" listens "$proto" "$addr"
}

start_inet() {
	local t0 tests=$REPO/netns-tests ws=$SMX_BIN/examples/ws_echo_server
	t0=$(now_us)
	head -c 100000 /dev/urandom >"$W/www/small.bin"
	head -c 1000000 /dev/urandom >"$W/www/mid.bin"
	head -c 10000000 /dev/urandom >"$W/www/big10.bin"
	(cd "$W/www" && sha256sum small.bin mid.bin big10.bin >SHA256SUMS)
	# http.server logs each request with the client's address: tests read where it came from.
	serve http "HTTP server" t "$HTTP_IP:80" python3 -m http.server 80 --bind "$HTTP_IP" --directory "$W/www"
	serve http6 "HTTP server (IPv6)" t "[$HTTP_IP6]:80" python3 -m http.server 80 --bind "$HTTP_IP6" --directory "$W/www"
	serve http_alt "HTTP server (second address)" t "$HTTP_ALT_IP:80" \
		python3 -m http.server 80 --bind "$HTTP_ALT_IP" --directory "$W/www"
	# --user=root: dnsmasq would otherwise drop to nobody, who cannot write the query log.
	# --local for the gateway's name: its AAAA is "no data", not the AAAA that --address for
	# smolmix.test gives every subdomain.
	daemon dns inet "$W/log/dns.log" dnsmasq --keep-in-foreground --no-resolv --no-hosts --user=root \
		--bind-interfaces --listen-address="$DNS_IP,$DNS_IP6" --pid-file="$W/dnsmasq.pid" \
		--address="/smolmix.test/$HTTP_IP" --address="/smolmix.test/$HTTP_IP6" \
		--address="/nymtech.net/$HTTP_IP" --address="/$GW_HOSTNAME_DNS/${IP[gw]}" \
		--local="/$GW_HOSTNAME_DNS/" --log-facility="$W/log/dns.log" --log-queries
	READY_T0=$(now_us) ready "dnsmasq" "listens on $DNS_IP:53 and [$DNS_IP6]:53" 10 "$(pid_of dns)" "$W/log/dns.log" dns_listens
	serve udp_echo "UDP echo" u "$ECHO_IP:7" python3 "$tests/udp_echo.py" "$ECHO_IP" 7 "$LIFETIME"
	serve tcp_echo "TCP echo" t "$ECHO_IP:7" python3 "$tests/tcp_server.py" echo "$ECHO_IP" 7 "$LIFETIME"
	serve sink "TCP upload sink" t "$SINK_IP:$SINK_PORT" python3 "$tests/tcp_server.py" sink "$SINK_IP" "$SINK_PORT" "$LIFETIME"
	if [[ -x $ws ]]; then
		serve ws_echo "WebSocket echo" t "$WS_IP:$WS_PORT" "$ws" --listen "$WS_IP:$WS_PORT" --lifetime "$LIFETIME"
	else
		say "no WebSocket echo server: $ws is missing (cargo build --release --examples)"
	fi
	serve iperf3 "iperf3 server" t "$IPERF_IP:5201" iperf3 -s -B "$IPERF_IP"
	say "inet servers up after $(since "$t0") (with 11.1 MB of random files)"
}

api_answers() { nx client curl -sf --max-time 2 -o /dev/null "${NYM_API}v1/epoch/key-rotation-info"; }

# The stand-in re-reads the details files on every request and skips missing ones: nodes read
# the key-rotation info from it during init, before their keys (and so their details) exist.
start_directory() {
	local gw_spec="id=4,ip=${IP[gw]},ws-port=9000,details=$W/gw.json"
	[[ -z ${LOCALNET_GW_VERSION:-} ]] || gw_spec+=",version=$LOCALNET_GW_VERSION"
	[[ -z ${LOCALNET_GW_HOSTNAME:-} ]] || gw_spec+=",hostname=$LOCALNET_GW_HOSTNAME"
	daemon directory directory "$W/log/directory.log" "$SMX_DIRECTORY" --listen "$API_IP:8000" \
		--node-version "$NODE_VERSION" \
		--mixnode "id=1,layer=1,ip=${IP[mix1]},details=$W/mix1.json" \
		--mixnode "id=2,layer=2,ip=${IP[mix2]},details=$W/mix2.json" \
		--mixnode "id=3,layer=3,ip=${IP[mix3]},details=$W/mix3.json" \
		--gateway "$gw_spec"
	GW_VERSION=${LOCALNET_GW_VERSION:-$NODE_VERSION} GW_HOSTNAME=${LOCALNET_GW_HOSTNAME:-}
	ready "directory stand-in" "$NYM_API answers from ns client, gateway as $GW_VERSION${GW_HOSTNAME:+ named $GW_HOSTNAME}" 15 \
		"$(pid_of directory)" "$W/log/directory.log" api_answers
}

# node_flags NODE: sets FLAGS, the flags for every `run` of that node (--local etc. are not
# saved in its config, so init and each run pass all of them).
node_flags() {
	FLAGS=(--local --accept-operator-terms-and-conditions --unsafe-disable-replay-protection
		--unsafe-disable-noise --nym-api-urls "$NYM_API" --nyxd-urls "http://$API_IP:26657/"
		--upgrade-mode-attestation-url "${NYM_API}upgrade-mode-attestation" --public-ips "${IP[$1]}")
	if [[ $1 == gw ]]; then
		FLAGS+=(--mode exit-gateway --open-proxy true --ipr-allow-local-ips true --nr-allow-local-ips true
			--enforce-zk-nyms false --lp-use-mock-ecash true)
	else
		FLAGS+=(--mode mixnode)
	fi
}

# Keys and config under $W/home/.nym/nym-nodes/NODE (HOME), all four at once; then each
# node's node-details (keys, and the gateway's IPR address) for the stand-in, written whole.
init_nodes() {
	local t0 n pids=() failed=()
	t0=$(now_us)
	for n in "${NODES[@]}"; do
		node_flags "$n"
		nx "$n" timeout 300 "${NYM[@]}" run --id "$n" --init-only "${FLAGS[@]}" </dev/null >"$W/log/$n.init.log" 2>&1 &
		pids+=($!)
	done
	for n in "${!NODES[@]}"; do wait "${pids[$n]}" || failed+=("${NODES[$n]}"); done
	for n in "${failed[@]}"; do
		warn "nym-node run --init-only failed for $n; last lines of $W/log/$n.init.log:"
		tail -n 30 "$W/log/$n.init.log" | sed 's/^/  | /' >&2
	done
	((${#failed[@]} == 0)) || return 1
	say "nym-node keys and configs made (run --init-only, 4 nodes at once) in $(since "$t0")"
	t0=$(now_us)
	for n in "${NODES[@]}"; do
		nx "$n" timeout 60 "${NYM[@]}" node-details --id "$n" --output json >"$W/$n.json.tmp" 2>"$W/log/$n.details.log" ||
			{ warn "nym-node node-details failed for $n:"; sed 's/^/  | /' "$W/log/$n.details.log" >&2; return 1; }
		mv "$W/$n.json.tmp" "$W/$n.json"
	done
	IPR_ADDRESS=$(json_field exit_ip_packet_router_address "$W/gw.json")
	GW_IDENTITY=$(json_field ed25519_identity_key "$W/gw.json")
	[[ -n $IPR_ADDRESS && -n $GW_IDENTITY ]] || die "no IPR address or identity in $W/gw.json"
	say "node details written ($W/{mix1,mix2,mix3,gw}.json) in $(since "$t0"); IPR $IPR_ADDRESS"
}
json_field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[2]))[sys.argv[1]] or "")' "$1" "$2"; }

start_node() {
	node_flags "$1"
	echo "=== localnet.sh: nym-node run --id $1, $(date -u +%FT%TZ)" >>"$W/log/$1.log"
	daemon "$1" "$1" "$W/log/$1.log" "${NYM[@]}" run --id "$1" "${FLAGS[@]}"
}

http_api() { nx client curl -sf --max-time 2 -o /dev/null "http://${IP[$1]}:8080/api/v1/metrics/mixing"; }
ws_accepts() { nx client timeout 2 bash -c "exec 3<>/dev/tcp/${IP[gw]}/9000"; }
has_nymtun() { nx gw ip -4 addr show dev nymtun0 | grep -q 'inet 10\.0\.0\.1/16'; }

mixnode_ready() {
	ready "mixnode ${1#mix}" "HTTP API answers" 120 "$(pid_of "$1")" "$W/log/$1.log" http_api "$1"
}

# The gateway is ready once its client websocket accepts and the IPR has made nymtun0.
gateway_ready() {
	local pid log=$W/log/gw.log
	pid=$(pid_of gw)
	ready "gateway" "HTTP API answers" 120 "$pid" "$log" http_api gw &&
		ready "gateway" "client websocket :9000 accepts" 120 "$pid" "$log" ws_accepts &&
		ready "gateway" "IPR made nymtun0 10.0.0.1/16" 180 "$pid" "$log" has_nymtun
}

start_nodes() {
	local t0 n READY_T0
	t0=$(now_us)
	for n in "${NODES[@]}"; do start_node "$n"; done
	READY_T0=$t0
	for n in mix1 mix2 mix3; do mixnode_ready "$n" || return 1; done
	gateway_ready || return 1
	say "all four nym-nodes up after $(since "$t0")"
}

# localnet.env: sourceable, everything tests need. Rewritten when the gateway's or the
# directory's pid changes.
write_env() {
	local n
	{
		echo "# The running localnet (scripts/localnet.sh up, $(date -u +%FT%TZ)). Source it."
		q LOCALNET_DIR "$W"
		q LOCALNET_PREFIX "$P"
		for n in "${NAMESPACES[@]}"; do q "LOCALNET_NS_${n^^}" "$P-$n"; done
		q NYM_API "$NYM_API"
		q LOCALNET_NODE_VERSION "$NODE_VERSION"
		q LOCALNET_GW_VERSION "$GW_VERSION"
		q LOCALNET_GW_HOSTNAME "${GW_HOSTNAME:-}"
		q LOCALNET_IPR_ADDRESS "$IPR_ADDRESS"
		q LOCALNET_GW_IDENTITY "$GW_IDENTITY"
		q LOCALNET_GW_IP "${IP[gw]}"
		q LOCALNET_GW_WS "ws://${IP[gw]}:9000"
		q LOCALNET_CLIENT_IP "${IP[client]}"
		q LOCALNET_EXIT_IP 198.18.1.1
		q LOCALNET_EXIT_IP6 2001:db8:1::1
		q LOCALNET_HTTP_IP "$HTTP_IP"
		q LOCALNET_HTTP_IP6 "$HTTP_IP6"
		q LOCALNET_HTTP_ALT_IP "$HTTP_ALT_IP"
		q LOCALNET_DNS_IP "$DNS_IP"
		q LOCALNET_DNS_IP6 "$DNS_IP6"
		q LOCALNET_DNS_NAME smolmix.test
		q LOCALNET_UDP_ECHO_IP "$ECHO_IP"
		q LOCALNET_UDP_ECHO_PORT 7
		q LOCALNET_TCP_ECHO_IP "$ECHO_IP"
		q LOCALNET_TCP_ECHO_PORT 7
		q LOCALNET_SINK_IP "$SINK_IP"
		q LOCALNET_SINK_PORT "$SINK_PORT"
		q LOCALNET_WS_URL "$(running ws_echo && echo "ws://$WS_IP:$WS_PORT/")"
		q LOCALNET_IPERF_IP "$IPERF_IP"
		q LOCALNET_WWW "$W/www"
		q LOCALNET_SMALL_URL "http://$HTTP_IP/small.bin"
		q LOCALNET_SMALL_FILE "$W/www/small.bin"
		q LOCALNET_SMALL_SHA256 "$(sha_of small.bin)"
		q LOCALNET_MID_URL "http://$HTTP_IP/mid.bin"
		q LOCALNET_MID_FILE "$W/www/mid.bin"
		q LOCALNET_MID_SHA256 "$(sha_of mid.bin)"
		q LOCALNET_BIG_URL "http://$HTTP_IP/big10.bin"
		q LOCALNET_BIG_FILE "$W/www/big10.bin"
		q LOCALNET_BIG_SHA256 "$(sha_of big10.bin)"
		q LOCALNET_LOG_DIR "$W/log"
		for n in "${SERVERS[@]}"; do q "LOCALNET_${n^^}_LOG" "$W/log/$n.log"; done
		for n in "${NODES[@]}" directory; do q "LOCALNET_${n^^}_LOG" "$W/log/$n.log"; done
		for n in "${NODES[@]}" directory "${SERVERS[@]}"; do q "LOCALNET_PID_${n^^}" "$(running "$n" && pid_of "$n")"; done
		for n in "${NODES[@]}"; do q "LOCALNET_METRICS_${n^^}" "http://${IP[$n]}:8080/api/v1/metrics/mixing"; done
		for n in "${NODES[@]}"; do q "LOCALNET_PACKETS_${n^^}" "http://${IP[$n]}:8080/api/v1/metrics/packets-stats"; done
	} >"$W/localnet.env.tmp"
	mv "$W/localnet.env.tmp" "$W/localnet.env"
}
q() { printf '%s=%q\n' "$1" "$2"; }
sha_of() { awk -v f="$1" '$2 == f { print $1 }' "$W/www/SHA256SUMS"; }

write_state() {
	{
		q P "$P"
		q NYM_NODE "$NYM_NODE"
		q SMX_DIRECTORY "$SMX_DIRECTORY"
		q NODE_VERSION "$NODE_VERSION"
		q GW_VERSION "${GW_VERSION:-}"
		q GW_HOSTNAME "${GW_HOSTNAME:-}"
		q IPR_ADDRESS "${IPR_ADDRESS:-}"
		q GW_IDENTITY "${GW_IDENTITY:-}"
	} >"$W/state.tmp"
	mv "$W/state.tmp" "$W/state"
}

up_failed() {
	trap - EXIT INT TERM HUP
	warn "up ${INTERRUPTED:-failed}: taking down what it made"
	teardown
	exit 1
}

cmd_up() {
	local t0 t tool
	need_root up
	for tool in ip nft dnsmasq python3 curl iperf3 ss setsid timeout sha256sum; do
		command -v "$tool" >/dev/null || die "$tool is missing: sudo scripts/deps.sh installs what the suites need"
	done
	refuse_if_up
	find_nym_node
	if [[ ! -x $SMX_DIRECTORY ]]; then
		warn "the directory stand-in $SMX_DIRECTORY is missing: build it (cargo build --release --locked --bins) or set SMX_DIRECTORY"
		exit 2
	fi
	NODE_VERSION=$("$NYM_NODE" --version | sed -n 's/^Build Version: *//p')
	[[ -n $NODE_VERSION ]] || die "$NYM_NODE --version prints no 'Build Version:'"
	make_state_dir
	P=smx-ln$$
	t0=$(now_us)
	say "up: $P-*, state in $W, nym-node $NODE_VERSION ($NYM_NODE)"
	# From here on, a failure or an interruption takes down whatever exists.
	write_state
	load_state
	trap up_failed EXIT
	trap 'INTERRUPTED=interrupted; exit 130' INT TERM HUP
	write_nym_env
	make_namespaces
	start_inet
	start_directory
	write_state
	init_nodes
	write_state
	start_nodes
	write_env
	trap - EXIT INT TERM HUP
	t=$(since "$t0")
	say "localnet up after $t: . $W/localnet.env  (or: eval \"\$($0 env)\")"
	say "client namespace $P-client; NYM_API=$NYM_API; IPR $IPR_ADDRESS"
}

# --- down and the others -------------------------------------------------------------------------

# Stops every process in our namespaces (found by namespace, so neither a crash of this script
# nor a recycled pid makes it miss one or hit a stranger), then deletes the namespaces.
teardown() {
	set +e
	local t0 ns pids=() n=0
	t0=$(now_us)
	for ns in "${NAMESPACES[@]}"; do
		# shellcheck disable=SC2207
		pids+=($(ip netns pids "$P-$ns" 2>/dev/null))
	done
	if ((${#pids[@]})); then
		stop_pids 30 "${pids[@]}"
		say "stopped ${#pids[@]} processes ($STOPPED_HOW) in $(since "$t0")"
	fi
	t0=$(now_us)
	for ns in "${NAMESPACES[@]}"; do
		[[ -e /run/netns/$P-$ns ]] || continue
		ip netns del "$P-$ns" && n=$((n + 1))
	done
	rm -rf "/etc/netns/$P-client" "/etc/netns/$P-gw"
	rmdir /etc/netns 2>/dev/null
	((n == 0)) || say "deleted $n namespaces ($P-*) in $(since "$t0")"
	rm -f "$W/state"
	if [[ -n ${KEEP_LOCALNET_DIR:-} && $KEEP_LOCALNET_DIR != 0 ]]; then
		say "kept $W (KEEP_LOCALNET_DIR)"
	else
		rm -rf "$W"
		say "removed $W"
	fi
}

cmd_down() {
	local t0
	need_root down
	t0=$(now_us)
	if ! load_state; then
		# A state dir kept earlier goes too, unless asked to keep it; a foreign dir is left alone.
		if [[ -f $W/.smolmix-localnet && (-z ${KEEP_LOCALNET_DIR:-} || $KEEP_LOCALNET_DIR == 0) ]]; then
			rm -rf "$W"
			say "no localnet was up; removed the kept $W"
		else
			say "no localnet is up in $W: nothing to do"
		fi
		return 0
	fi
	say "down: $P-*"
	teardown
	say "localnet down after $(since "$t0")"
}

cmd_env() {
	[[ -f $W/state && -f $W/localnet.env ]] || die "no localnet is up in $W (sudo $0 up)"
	cat "$W/localnet.env"
}

need_up() {
	if ! load_state || ! any_namespace; then die "no localnet is up in $W (sudo $0 up)"; fi
}

cmd_gateway_stop() {
	local t0 pid
	need_root gateway-stop
	need_up
	if ! running gw; then
		say "gateway is not running"
		return 0
	fi
	pid=$(pid_of gw)
	t0=$(now_us)
	stop_pids 30 "$pid"
	wait_until 10 "" eval '! has_nymtun' || warn "nymtun0 still exists in $P-gw"
	say "gateway stopped (pid $pid, $STOPPED_HOW) after $(since "$t0")"
	rm -f "$W/pids/gw.pid"
	write_env
}

cmd_gateway_start() {
	local t0
	need_root gateway-start
	need_up
	if running gw; then
		say "gateway is already running (pid $(pid_of gw))"
		return 0
	fi
	wait_until 10 "" eval '! has_nymtun' || die "nymtun0 of the previous gateway is still there in $P-gw"
	t0=$(now_us)
	start_node gw
	READY_T0=$t0 gateway_ready || die "gateway did not come back (see $W/log/gw.log)"
	write_env
	say "gateway up again (pid $(pid_of gw), same keys) after $(since "$t0")"
}

cmd_directory_restart() {
	local t0 pid
	need_root directory-restart
	need_up
	t0=$(now_us)
	if running directory; then
		pid=$(pid_of directory)
		stop_pids 10 "$pid"
	fi
	start_directory || die "the directory stand-in did not come back"
	write_state
	write_env
	say "directory stand-in restarted after $(since "$t0")"
}

cmd_status() {
	local n bad=0 line
	need_root status
	need_up
	say "localnet $P-*, state in $W, NYM_API=$NYM_API"
	exec 4>&2 2>/dev/null    # the probes' own complaints; the table says it
	for n in "${NODES[@]}" directory "${SERVERS[@]}"; do
		# A server never started (ws_echo without its binary, a network from an older script).
		if [[ ! -e $W/pids/$n.pid && " ${SERVERS[*]} " == *" $n "* ]]; then
			printf '  %-10s %s\n' "$n" "not started"
			continue
		fi
		if running "$n"; then line="running (pid $(pid_of "$n"))"; else line="NOT RUNNING"; bad=1; fi
		case $n in
		mix?) if http_api "$n"; then line+=", HTTP API answers"; else line+=", HTTP API silent"; bad=1; fi ;;
		gw)
			if http_api gw; then line+=", HTTP API answers"; else line+=", HTTP API silent"; bad=1; fi
			if ws_accepts; then line+=", websocket :9000 accepts"; else line+=", websocket :9000 closed"; bad=1; fi
			if has_nymtun; then line+=", nymtun0 10.0.0.1/16"; else line+=", no nymtun0"; bad=1; fi
			;;
		directory) if api_answers; then line+=", answers (gateway as $GW_VERSION${GW_HOSTNAME:+, named $GW_HOSTNAME})"; else line+=", silent"; bad=1; fi ;;
		esac
		printf '  %-10s %s\n' "$n" "$line"
	done
	exec 2>&4 4>&-
	return "$bad"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
gateway-stop) cmd_gateway_stop ;;
gateway-start) cmd_gateway_start ;;
directory-restart) cmd_directory_restart ;;
*)
	echo "usage:" >&2
	sed -n '/^#   sudo scripts\/localnet.sh up/,/^#$/s/^# \{0,1\}//p' "$0" >&2
	exit 2
	;;
esac
