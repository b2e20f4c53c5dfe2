#!/bin/bash
# The main job, locally: build smolmix-vpn and smolmix-exit, build three network namespaces,
# bring the tunnel up in "client", and use it. Nothing leaves the namespaces it creates.
#
#  ns client                        ns exit                              ns inet
#  smolmix-vpn up ─ smx0            smolmix-exit --listen 198.51.100.1   HTTP, DNS, UDP echo
#  vc 198.51.100.2 ──────────────── ve 198.51.100.1 · vi 192.0.2.1 ───── vo 192.0.2.2
#
# With a terminal, it then drops you into a shell inside ns client (everything you run there
# goes through the tunnel). Exit it, and the same is shown in per-app mode: `up --netns app`
# and a shell started with `smolmix-vpn exec`, while ns client itself stays direct.
set -e
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "demo.sh needs root (network namespaces): sudo $0" >&2; exit 1; }
scripts/deps.sh
cargo build --release --locked --bins
exec 3>&1
CURRENT_SUITE=demo
source netns-tests/lib.sh
TMP=$(mktemp -d /tmp/smx-demo.XXXXXX)
app="smx-app-$$"
trap 'ip netns del "$app" 2>/dev/null || true; cleanup_all' EXIT
setup_topology "smx-demo-$$"
setup_exit_nat
start_exit nymtun0 51820
start_inet
pretty "$c" "smolmix-vpn up --ipr udp://198.51.100.1:51820 --dns 192.0.2.2"
start_client --ipr udp://198.51.100.1:51820 --dns 192.0.2.2 --dns-check-name smolmix.test
wait_for 10 grep -q '^dns' "$TMP/client.out" || true
cat "$TMP/client.out" "$TMP/client.err"
pretty "$c" "curl http://192.0.2.2/ through the tunnel"
n "$c" curl -sS -o /dev/null -w 'HTTP %{http_code}, %{size_download} bytes in %{time_total} s\n' http://192.0.2.2/mid.bin
pretty "$c" "ping 192.0.2.2 and 2001:db8:1::2"
n "$c" ping -c 3 -i 0.2 192.0.2.2 | tail -2
n "$c" ping -6 -c 3 -i 0.2 2001:db8:1::2 | tail -2
pretty "$c" "dig smolmix.test (the resolver smolmix-vpn configured, through the tunnel)"
n "$c" dig +short smolmix.test
pretty "$c" "the HTTP server saw:"
tail -n 1 "$TMP/http.log"
pretty "$c" "smolmix-vpn status"
n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" status
if [[ -t 0 ]]; then
	pretty "$c" "a shell inside ns client; try: curl http://192.0.2.2/, ping 192.0.2.2 — exit to stop"
	n "$c" env PS1='(smolmix) \w# ' bash --norc -i || true
fi
stop_client && pretty "$c" "tunnel stopped cleanly"

# Per-app mode, with smolmix-vpn in ns client's network namespace only (lib.sh, start_client).
CLIENT_NET_ONLY=1
pretty "$c" "smolmix-vpn up --netns $app: the tunnel for one namespace only"
start_client --ipr udp://198.51.100.1:51820 --netns "$app" --dns 192.0.2.2
cat "$TMP/client.out"
# By root itself: under `sudo scripts/demo.sh` exec would otherwise serve the sudo caller only
# (its own user, the default run dir).
vx() { nsenter --net="/run/netns/$c" env -u SUDO_UID -u SUDO_GID -u PKEXEC_UID SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" exec --user nobody "$@"; }
pretty "$app" "smolmix-vpn exec --user nobody -- curl http://192.0.2.2/: the server sees the exit"
vx -- curl -sS -o /dev/null -w 'HTTP %{http_code}\n' http://192.0.2.2/mid.bin?app && tail -n 1 "$TMP/http.log"
pretty "$c" "the same curl in ns client goes direct: the server sees the client"
n "$c" curl -sS -o /dev/null -w 'HTTP %{http_code}\n' http://192.0.2.2/mid.bin?host && tail -n 1 "$TMP/http.log"
if [[ -t 0 ]]; then
	pretty "$app" "a shell from smolmix-vpn exec (as nobody, no capabilities); exit to stop"
	vx -- bash --norc -i || true
fi
stop_client && pretty "$c" "per-app tunnel stopped; namespace $app removed; namespaces are being removed"
