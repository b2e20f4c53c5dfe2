#!/bin/bash
# Without internet, the mixnet paths fail fast and clearly, and leave the host untouched.
#
#  ns offline (only lo, no route anywhere)
#  smolmix-vpn exits | up | up --ipr <nym address>   ──✗──  Nym directory (mainnet nym-api)
#
# The namespace has no interface but loopback, so nothing can leave it: the Nym directory is
# unreachable by construction, exactly as on a machine with no network.

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
untouched() {
	! n "$o" ip link show smx0 2>/dev/null &&
	! n "$o" ip rule show | grep -q 'lookup 29549' &&
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
check "up (best IPR from the directory): fails within 15 s naming the directory" fails_fast up up --no-dns
check "up changed nothing on the host" untouched
check "up --ipr <nym address>: fails within 15 s naming the directory" fails_fast up-ipr up --ipr "$NYM_IPR" --no-dns
check "up --ipr <nym address> changed nothing on the host" untouched
check "positive control: the error names whichever directory was configured" names_given_directory

finish
