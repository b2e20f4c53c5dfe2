#!/bin/bash
# The library API (smolmix::Tunnel) end to end, without root and without a TUN on the client
# side: the examples run as uid 65534 in ns client, each with its own userspace smoltcp stack,
# over the udp transport to smolmix-exit, and reach real servers in ns inet.
#
#  ns client                        ns exit                               ns inet
#  examples as uid 65534:           smolmix-exit --listen 198.51.100.1    http :80, dnsmasq :53,
#  tcp, tcp_echo, udp, websocket    nymtun0 10.0.0.1/16, fc00::1/112      tcp echo :7, ws echo :8765
#  (no TUN, no routes changed)      forwarding + masquerade
#  vc 198.51.100.2 ──────────────── ve 198.51.100.1 · vi 192.0.2.1 ────── vo 192.0.2.2
#                                                     2001:db8:1::1         2001:db8:1::2
#
# One more program runs the same way: scripts/fresh-dependent.sh's, a project of its own that
# depends on the library only, resolved without our Cargo.lock.
#
# smolmix-vpn is never started here. Each check prints "ok N - …" or "not ok N - …"; the last
# line is "library: N passed, N failed".

set -e
exec 3>&1
CURRENT_SUITE=library
source "$(dirname "$0")/lib.sh"
EX=${SMX_EXAMPLES:-$SMX_BIN/examples}
# A program of its own that depends on the library only and was resolved without our Cargo.lock:
# built by scripts/fresh-dependent.sh, which scripts/test.sh runs after the release build.
FRESH=${SMX_FRESH_DEPENDENT:-$SMX_BIN/../debug/smolmix-fresh-dependent}
IPR=udp://198.51.100.1:51820
TMP=$(mktemp -d /tmp/smx-library.XXXXXX)
trap cleanup_all EXIT
for bin in tcp tcp_echo udp websocket ws_echo_server; do
	[[ -x $EX/$bin ]] || { echo "missing $EX/$bin: run cargo build --release --examples" >&3; exit 1; }
done
# The unprivileged examples must reach their output directory; nothing else of $TMP.
chmod 711 "$TMP"
mkdir -m 1777 "$TMP/out"

setup_topology "smx-lib-$$"
setup_exit_nat
start_exit nymtun0 51820
start_inet

# TCP echo in ns inet: echoes each connection until the client's FIN, then closes; stops by
# itself after 10 minutes, like every test server.
ip netns exec "$i" python3 -c '
import socket, threading, time
def serve(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)
s = socket.create_server(("192.0.2.2", 7))
s.settimeout(1.0)
deadline = time.time() + 600
while time.time() < deadline:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
' >"$TMP/tcpecho.log" 2>&1 &
echo $! >"$TMP/tcpecho.pid"
ip netns exec "$i" "$EX/ws_echo_server" --listen 192.0.2.2:8765 --lifetime 600 >"$TMP/wsecho.out" 2>&1 &
echo $! >"$TMP/wsecho.pid"
wait_for 10 n "$i" python3 -c 'import socket; socket.create_connection(("192.0.2.2", 7), 1)'
wait_for 10 grep -q '^listening' "$TMP/wsecho.out"

# lib NAME ARGS...: an example as uid/gid 65534 (nobody) in ns client, through the local exit.
lib() {
	local bin=$1; shift
	pretty "$c" "$bin $*"
	n "$c" timeout 180 setpriv --reuid=65534 --regid=65534 --clear-groups "$EX/$bin" --ipr "$IPR" "$@"
}

t_unprivileged() { [[ $(n "$c" setpriv --reuid=65534 --regid=65534 --clear-groups id -u) == 65534 ]]; }
t_tcp_echo() { lib tcp_echo --server 192.0.2.2:7 --bytes 300000 | tee "$TMP/tcpecho.out" | grep -q '^tcp echo: 300000 of 300000 bytes matched'; }
t_http() {
	local want got
	lib tcp --url http://192.0.2.2/mid.bin --output "$TMP/out/mid.bin" | tee "$TMP/http.out"
	grep -q '^HTTP 200: 1000000 bytes' "$TMP/http.out"
	want=$(sha256sum <"$TMP/www/mid.bin" | cut -d' ' -f1)
	got=$(sha256sum <"$TMP/out/mid.bin" | cut -d' ' -f1)
	[[ $want == "$got" ]]
}
t_http_v6() {
	lib tcp --url 'http://[2001:db8:1::2]/mid.bin' --output "$TMP/out/mid6.bin" | tee "$TMP/http6.out"
	grep -q '^HTTP 200: 1000000 bytes' "$TMP/http6.out" && cmp -s "$TMP/www/mid.bin" "$TMP/out/mid6.bin"
}
# tcp's GET again, from the fresh dependent project (same flow: Tunnel, tcp_connect, hyper).
t_fresh_dependent() {
	[[ -x $FRESH ]] || { echo "missing $FRESH: run scripts/fresh-dependent.sh first"; return 1; }
	pretty "$c" "$(basename "$FRESH") $IPR http://192.0.2.2/mid.bin"
	n "$c" timeout 180 setpriv --reuid=65534 --regid=65534 --clear-groups "$FRESH" "$IPR" http://192.0.2.2/mid.bin \
		"$TMP/out/fresh.bin" | tee "$TMP/fresh.out"
	grep -q '^HTTP 200: 1000000 bytes' "$TMP/fresh.out" && cmp -s "$TMP/www/mid.bin" "$TMP/out/fresh.bin"
}
t_dns() {
	lib udp --server 192.0.2.2:53 --name smolmix.test --type both | tee "$TMP/dns.out"
	grep -qx 'smolmix.test A 192.0.2.80' "$TMP/dns.out" && grep -qx 'smolmix.test AAAA 2001:db8:1::80' "$TMP/dns.out"
}
t_websocket() { lib websocket --url ws://192.0.2.2:8765/ --count 10 | tee "$TMP/ws.out" | grep -q '^websocket: 11/11 echoes matched'; }
t_refused() {
	local rc=0
	lib tcp --url http://192.0.2.2:81/ >"$TMP/refused.out" 2>"$TMP/refused.err" || rc=$?
	[[ $rc -ne 0 ]] && grep -q 'refused' "$TMP/refused.err"
}
t_no_exit() {
	local rc=0 start=$(date +%s)
	n "$c" timeout 60 setpriv --reuid=65534 --regid=65534 --clear-groups "$EX/udp" --ipr udp://198.51.100.1:51999 \
		>"$TMP/noexit.out" 2>"$TMP/noexit.err" || rc=$?
	[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q 'udp://198.51.100.1:51999' "$TMP/noexit.err" && (( $(date +%s) - start <= 30 ))
}
# Tunnel::new() (no --ipr) asks the Nym directory; ns client has no way out of our namespaces.
t_offline_best_ipr() {
	local rc=0 start=$(date +%s)
	n "$c" timeout 60 setpriv --reuid=65534 --regid=65534 --clear-groups "$EX/udp" >"$TMP/offline.out" 2>"$TMP/offline.err" || rc=$?
	[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q 'Nym directory' "$TMP/offline.err" && (( $(date +%s) - start <= 20 ))
}
# Only lo and the veth: the library needs no TUN and changes nothing in the namespace.
t_no_tun() { [[ -z $(n "$c" ip -o link show | awk -F': ' '{print $2}' | grep -vE '^(lo|vc@.*)$') ]]; }
t_routes_untouched() { [[ $(n "$c" ip route show | wc -l) -eq 2 && -z $(n "$c" ip rule show | grep -vE 'lookup (local|main|default)') ]]; }
t_only_exit_seen() {
	grep -q '"GET /mid.bin' "$TMP/http.log" && ! grep '"GET ' "$TMP/http.log" | grep -qv '^192\.0\.2\.1 '
}

pretty "$c" "library API through smolmix-exit, unprivileged"
check "the examples really run as uid 65534" t_unprivileged
check "tcp_echo: 300 kB echoed over one connection (write, half-close, read to EOF)" t_tcp_echo
check "tcp (hyper): HTTP GET of 1 MB, sha256 matches" t_http
check "tcp (hyper) over IPv6: HTTP GET of 1 MB, identical" t_http_v6
check "a fresh dependent project (library only, no lock of ours): HTTP GET of 1 MB, identical" t_fresh_dependent
check "udp (hickory): DNS A and AAAA of smolmix.test through the tunnel" t_dns
check "websocket (tokio-tungstenite): 10 text + one 64 KiB binary message echoed" t_websocket
check "a closed port fails fast with a 'refused' error" t_refused
check "an exit that does not answer: a clear error naming it within 30 s" t_no_exit
check "Tunnel::new() without internet: a clear error naming the Nym directory within 20 s" t_offline_best_ipr
check "the HTTP server saw only the exit's address" t_only_exit_seen
check "no TUN or other interface was created in ns client" t_no_tun
check "routes and rules of ns client are untouched" t_routes_untouched

finish
