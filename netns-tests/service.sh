#!/bin/bash
# smolmix-vpn as a systemd service (Type=notify, dist/smolmix-vpn@.service): what `up` tells
# systemd through NOTIFY_SOCKET, and the connect progress it prints and keeps in `status`.
# systemd itself is not needed: notify_listener.py plays its part and logs every assignment.
#
#  ns client                                ns exit                              ns inet
#  smolmix-vpn up  ── NOTIFY_SOCKET ──▶     smolmix-exit --delay-ms 500          dnsmasq
#  notify_listener.py ($TMP/notify.sock)    (a connect takes ~1 s: the steps
#  vc 198.51.100.2 ──────────────────────── ve 198.51.100.1 · vi 192.0.2.1 ───── vo 192.0.2.2
#                                           are seen while they happen)
#
# Checks: STATUS= for each connect step, READY=1 once and only after the `connected` line,
# STATUS= when the exit is lost and when the tunnel is back, STOPPING=1 on SIGTERM; the control:
# against no exit at all, the same listener hears the steps and the failed attempts (the host
# blocked meanwhile) but never READY=1. And the unit's
# ExecStopPost, `down --stale`: a running up is left alone, a dead one's changes are undone.
#
# Each check prints "ok N - …" or "not ok N - …"; the last line is "N passed, N failed".

set -e
exec 3>&1
CURRENT_SUITE=service
source "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d /tmp/smx-service.XXXXXX)
note() { echo "  # $*" >&3; }
trap cleanup_all EXIT
setup_topology "smx-svc-$$"
setup_exit_nat
start_exit nymtun0 51820 --delay-ms 500
start_inet

NOTIFY=$TMP/notify.sock
LOG=$TMP/notify.log
vpn() { n "$c" env SMOLMIX_RUN_DIR="$TMP/run" "$SMX_BIN/smolmix-vpn" "$@"; }
status_text() { vpn status; }
not() { ! "$@"; }

# listen: a fresh listener (and log) on $NOTIFY, ready when it says so.
listen() {
	[[ -e $TMP/listener.pid ]] && kill "$(cat "$TMP/listener.pid")" && rm "$TMP/listener.pid"
	: >"$LOG"
	python3 "$(dirname "$0")/notify_listener.py" "$NOTIFY" "$LOG" "$TMP/client.out" &
	echo $! >"$TMP/listener.pid"
	wait_for 10 grep -q '^listening' "$LOG"
}

# up_notified IPR: up in the background with NOTIFY_SOCKET set, as systemd starts it.
up_notified() {
	: >"$TMP/client.out"
	ip netns exec "$c" env SMOLMIX_RUN_DIR="$TMP/run" NOTIFY_SOCKET="$NOTIFY" \
		"$SMX_BIN/smolmix-vpn" up --ipr "$1" --dns 192.0.2.2 >"$TMP/client.out" 2>"$TMP/client.err" &
	CLIENT_PID=$!
}

pretty "$c" "connecting: steps on stdout, in status and in STATUS="
listen
up_notified udp://198.51.100.1:51820
check "while connecting, status says so and names the step it waits on" \
	wait_for 5 sh -c "ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn status | grep -q 'ipr: Connect sent, protocol v10'"
note "status while connecting: $(status_text | tr '\n' '|')"
check "READY=1 arrives" wait_for 30 grep -q '^[0-9.]* READY=1$' "$LOG"
note "systemd heard: $(grep -v '^listening' "$LOG" | cut -d' ' -f2- | tr '\n' '|')"
# The steps: at least exit, transport, Connect, session up, each as STATUS=connecting: …, all
# before READY=1.
t_steps_before_ready() {
	python3 - "$LOG" <<-'PY'
	import sys
	lines = [l.split(" ", 1)[1].rstrip("\n") for l in open(sys.argv[1]) if l[0].isdigit()]
	ready = lines.index("READY=1")
	steps = [i for i, l in enumerate(lines) if l.startswith("STATUS=connecting: ")]
	sys.exit(0 if len(steps) >= 4 and max(steps) < ready else 1)
	PY
}
check "STATUS=connecting: for each step, all before READY=1" t_steps_before_ready
check "READY=1 exactly once" test "$(grep -c ' READY=1$' "$LOG")" -eq 1
check "READY=1 only after the connected line was printed" grep -q 'ready-check connected-printed=yes' "$LOG"
check "READY=1 comes with the connected line as STATUS=" grep -q ' STATUS=connected to udp://198.51.100.1:51820 (IPR v10)' "$LOG"
# Each step's line: its elapsed time, then what happened; the session comes up after the
# exit's two 0.5 s delays (the Connect and its answer), and the printed time says so.
t_timed_steps() {
	python3 - "$TMP/client.out" <<-'PY'
	import re, sys
	steps = {}
	for l in open(sys.argv[1]):
	    m = re.match(r"^ *(\d+\.\d\d) s  (\w[\w ]*): ", l)
	    if m: steps.setdefault(m.group(2), []).append(float(m.group(1)))
	up = [t for t in steps.get("ipr", [])]
	ok = {"exit", "transport", "ipr"} <= steps.keys() and len(up) >= 2 and up[-1] >= 0.9
	sys.exit(0 if ok else 1)
	PY
}
check "up printed each step with its elapsed time (session up after >= 0.9 s)" t_timed_steps
note "$(grep -E '^ +[0-9]+\.[0-9]{2} s  ' "$TMP/client.out" | tr '\n' '|')"
check "status --json keeps the connect's steps" sh -c "ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn status --json | python3 -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)[\"progress\"]) >= 4 else 1)'"

pretty "$c" "the exit stalls, then comes back: STATUS= says so"
kill -STOP "$(cat "$TMP/exit-nymtun0.pid")"
# The dead-exit verdict comes after 45 s of silence (link/drive.rs session_config).
check "STATUS=reconnecting: the exit went silent" wait_for 70 grep -q ' STATUS=reconnecting: the exit went silent' "$LOG"
# The status file follows within a second (the housekeeping tick).
state_is() { vpn status | grep -Eq "^state: +$1\$"; }
check "status says reconnecting" wait_for 5 state_is reconnecting
kill -CONT "$(cat "$TMP/exit-nymtun0.pid")"
check "STATUS=reconnected once the exit answers again" wait_for 60 grep -q ' STATUS=reconnected to udp://198.51.100.1:51820' "$LOG"
check "no second READY=1 (the service was ready all along)" test "$(grep -c ' READY=1$' "$LOG")" -eq 1

pretty "$c" "ExecStopPost of a second instance that failed at the lock: down --stale"
t_stale_leaves_it() {
	vpn down --stale | grep -q "a tunnel is running (pid $CLIENT_PID); left alone" &&
	kill -0 "$CLIENT_PID" && state_is connected
}
check "status says connected again" wait_for 5 state_is connected
check "down --stale leaves the running up alone: still running, still connected" t_stale_leaves_it

pretty "$c" "stop"
check "SIGTERM: up exits 0" stop_client
check "STOPPING=1 was sent" grep -q ' STOPPING=1$' "$LOG"
check "the host is clean" host_is_clean

pretty "$c" "control: no exit answers"
listen
up_notified udp://198.51.100.1:51829
# A connect that fails is tried again (the exit may come): the steps and the failure reach
# STATUS=, READY=1 never does, and a stop ends it cleanly.
check "the listener heard the steps (it works)" wait_for 30 grep -q ' STATUS=connecting: .*ipr: Connect sent, protocol v9' "$LOG"
check "and the failed attempt, saying the host is blocked" wait_for 30 grep -q ' STATUS=connecting: cannot connect yet: .*blocked' "$LOG"
check "but never READY=1" sh -c "! grep -q 'READY=1' '$LOG'"
check "status says connecting" sh -c "[ \"\$(ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn status | head -1)\" = 'state:     connecting' ]"
check "SIGTERM: up exits 0" stop_client
check "no status file is left claiming a tunnel" sh -c "[ \"\$(ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn status | head -1)\" = 'state: disconnected' ]"
check "the host is clean" host_is_clean

pretty "$c" "a crash: down --stale undoes what the dead up left"
listen
up_notified udp://198.51.100.1:51820
check "up connects again" wait_for 30 grep -q '^connected' "$TMP/client.out"
kill -KILL "$CLIENT_PID"
wait "$CLIENT_PID" || true
check "control: after SIGKILL the host still holds the tunnel's changes" not host_is_clean
check "down --stale undoes them" sh -c "ip netns exec $c env SMOLMIX_RUN_DIR=$TMP/run $SMX_BIN/smolmix-vpn down --stale | grep -q 'undid'"
check "the host is clean" host_is_clean

finish
