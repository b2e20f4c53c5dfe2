#!/usr/bin/env python3
"""systemd's side of sd_notify(3) for the service suite: binds a Unix datagram socket (what
systemd passes a Type=notify service as NOTIFY_SOCKET) and logs each assignment it receives,
one per line, as "SECONDS KEY=VALUE" (seconds since the listener started).

When READY=1 arrives it also logs whether the service's stdout (OUT) already holds the
"connected" line, as "ready-check connected-printed=yes|no": READY=1 must never come first.

usage: notify_listener.py SOCKET LOG OUT. Stops by itself after 10 minutes (bounded, like
every test server).
"""
import os
import socket
import sys
import time

path, log_path, out_path = sys.argv[1:4]
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(1.0)
t0 = time.time()
with open(log_path, "a", buffering=1) as log:
    log.write("listening\n")
    while time.time() < t0 + 600:
        try:
            data = s.recv(4096)
        except socket.timeout:
            continue
        now = time.time() - t0
        for line in data.decode(errors="replace").split("\n"):
            log.write(f"{now:.3f} {line}\n")
            if line == "READY=1":
                try:
                    printed = any(l.startswith("connected") for l in open(out_path))
                except OSError:
                    printed = False
                log.write(f"{now:.3f} ready-check connected-printed={'yes' if printed else 'no'}\n")
