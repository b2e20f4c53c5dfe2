#!/bin/bash
# Without internet, the mixnet paths fail fast and clearly: `exits` with one error line; `up`
# says within 15 s why it cannot connect and that the host is blocked meanwhile (the kill
# switch is in place from its first instant), keeps trying, and on SIGTERM leaves the host as
# it was.
#
#  ns offline (only lo, no route anywhere)
#  smolmix-vpn exits | up | up --ipr <nym address>   ──✗──  Nym directory (mainnet nym-api)
#
# The namespace has no interface but loopback, so nothing can leave it: the Nym directory is
# unreachable by construction, exactly as on a machine with no network.
#
# Then saved profiles (src/cli/profile.rs), in lib.sh's topology without its inet namespace's
# servers: the profile alone says where the exit is, so a run that connects used it.
#
#  ns client                                          ns exit
#  smolmix-vpn up NAME --profile-dir $TMP/profiles    smolmix-exit --listen 198.51.100.1:51820
#  vc 198.51.100.2 ────────────────────────────────── ve 198.51.100.1
#
#  bad.toml   mtu = 100 on line 3  -> exit 1 naming bad.toml:3 and "mtu"; no TUN, no run dir
#  open.toml  mode 0666            -> refused as root, naming the file and the fix
#  good.toml  ipr = "udp://198.51.100.1:51820", tun = "smx-prof", no-dns -> connected on smx-prof
#  good.toml + --tun smx-cli       -> the command line wins: smx-cli, no smx-prof

set -e
exec 3>&1
CURRENT_SUITE=offline
source "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d /tmp/smx-offline.XXXXXX)
o="smx-off-$$"
c=$o e= i=
trap cleanup_all EXIT
ip netns add "$o"
n "$o" ip link set lo up

# A well-formed Nym address: identity and gateway = the ed25519 base point, key = the x25519 one.
NYM_IPR=6x5SYnLroiN7WYq8NQYU9KHcH4YjpBbwpUfVu3EB7ieH.c8fpTXm3XTRgE5maYQ24Li4L65wMYvAFomzXknxVEx7@6x5SYnLroiN7WYq8NQYU9KHcH4YjpBbwpUfVu3EB7ieH

# fails_fast NAME ARGS...: exit status non-zero, within 15 s, exactly one line on stderr,
# and that line names the Nym directory.
fails_fast() {
	local name=$1; shift
	local start=$(date +%s) rc=0
	n "$o" env SMOLMIX_RUN_DIR="$TMP/run" timeout 60 "$SMX_BIN/smolmix-vpn" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
	local took=$(( $(date +%s) - start ))
	echo "$name: rc=$rc took=${took}s stderr: $(cat "$TMP/$name.err")"
	(( rc != 0 && rc != 124 && took <= 15 )) &&
	[[ $(wc -l <"$TMP/$name.err") -eq 1 ]] &&
	grep -q 'Nym directory' "$TMP/$name.err" &&
	grep -q 'https://validator.nymtech.net/api/' "$TMP/$name.err"
}
# blocked_retrying NAME ARGS...: within 15 s `smolmix-vpn ARGS` says on stderr that it cannot
# connect yet, naming the Nym directory, that the host is blocked and that `smolmix-vpn down`
# opens it; it is still running (retrying) with the kill switch in place; SIGTERM ends it with
# status 0.
blocked_retrying() {
	local name=$1; shift
	# Not through n(): $! must be smolmix-vpn itself (ip netns exec and env exec it).
	ip netns exec "$o" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	local pid=$! start=$(date +%s) ok=0 rc=0
	wait_for 15 grep -q 'cannot connect yet' "$TMP/$name.err" || ok=1
	echo "$name: after $(( $(date +%s) - start )) s: $(head -n 1 "$TMP/$name.err")"
	grep -q 'Nym directory' "$TMP/$name.err" && grep -q 'https://validator.nymtech.net/api/' "$TMP/$name.err" &&
		grep -q 'blocked.*smolmix-vpn down' "$TMP/$name.err" && kill -0 "$pid" &&
		n "$o" nft list table inet smolmix_killswitch >/dev/null || ok=1
	kill -TERM "$pid"; wait "$pid" || rc=$?
	echo "$name: SIGTERM -> exit status $rc"
	[[ $ok -eq 0 && $rc -eq 0 ]]
}
untouched() {
	! n "$o" ip link show smx0 2>/dev/null &&
	! n "$o" ip rule show | grep -q 'lookup 29549' &&
	! n "$o" nft list table inet smolmix_killswitch >/dev/null 2>&1 &&
	[[ ! -e $TMP/run/journal ]]
}
# Positive control: the check that a directory is named must see another URL when asked to.
names_given_directory() {
	local rc=0
	n "$o" timeout 60 "$SMX_BIN/smolmix-vpn" exits --nym-api http://127.0.0.1:9/ 2>"$TMP/ctl.err" || rc=$?
	(( rc != 0 )) && grep -q 'http://127.0.0.1:9/' "$TMP/ctl.err" && ! grep -q 'validator.nymtech.net' "$TMP/ctl.err"
}

pretty "$o" "no way out: the Nym directory cannot be reached"
check "exits: fails within 15 s with one line naming the Nym directory" fails_fast exits exits
check "exits --json: same" fails_fast exits-json exits --json
check "up (best IPR from the directory): within 15 s says it cannot reach the directory and the host is blocked; keeps trying" blocked_retrying up up --no-dns
check "after SIGTERM the host is as before" untouched
check "up --ipr <nym address>: the same" blocked_retrying up-ipr up --ipr "$NYM_IPR" --no-dns
check "after SIGTERM the host is as before" untouched
check "positive control: the error names whichever directory was configured" names_given_directory

ip netns del "$o"
setup_topology "smx-offp-$$"
start_exit nymtun0 51820
P=$TMP/profiles
mkdir -m 0755 "$P"
printf '# good but for the mtu\nipr = "udp://198.51.100.1:51820"\nmtu = 100\nno-dns = true\n' >"$P/bad.toml"
printf 'ipr = "udp://198.51.100.1:51820"\ntun = "smx-prof"\nno-dns = true\n' >"$P/good.toml"
install -m 0666 "$P/good.toml" "$P/open.toml"

# refused NAME PATTERN: `up NAME` exits non-zero, says PATTERN, and never got as far as the
# run dir (created before the first change to the host) or a TUN.
refused() {
	local rc=0
	n "$c" env SMOLMIX_RUN_DIR="$TMP/prun" timeout 20 "$SMX_BIN/smolmix-vpn" up "$1" --profile-dir "$P" 2>"$TMP/prof.err" || rc=$?
	echo "up $1: rc=$rc stderr: $(cat "$TMP/prof.err")"
	(( rc != 0 && rc != 124 )) && grep -qF -- "$2" "$TMP/prof.err" &&
	[[ ! -e $TMP/prun ]] && [[ -z $(n "$c" ip -o link show type tun) ]]
}
tun_is() { n "$c" ip link show "$1" >/dev/null 2>&1; }

pretty "$c" "saved profiles"
check "up bad: refused naming $P/bad.toml:3 and key \"mtu\", before any change" \
	refused bad "$P/bad.toml:3: key \"mtu\": 100 is not in 1280..=65535"
check "up open (mode 0666) as root: refused naming the file and the fix" refused open "chmod go-w $P/open.toml"
check "up missing: refused listing the profiles there are" refused missing "the profiles in $P are: bad, good, open"
check "up good (ipr from the profile alone): connects" start_client good --profile-dir "$P"
check "the profile's tun = \"smx-prof\" was used" tun_is smx-prof
check "stopped cleanly" stop_client
check "smx-prof is gone and the host is clean" eval '! tun_is smx-prof && host_is_clean'
check "up --profile good --tun smx-cli: connects" start_client --profile good --profile-dir "$P" --tun smx-cli
check "the command line's --tun wins: smx-cli, no smx-prof" eval 'tun_is smx-cli && ! tun_is smx-prof'
check "stopped cleanly" stop_client
check "the host is clean" eval '! tun_is smx-cli && host_is_clean'

finish
