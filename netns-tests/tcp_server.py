#!/usr/bin/env python3
"""TCP test servers for the netns suites and scripts/localnet.sh.

    tcp_server.py echo HOST PORT [LIFETIME]   echo each connection until the client's FIN, then close
    tcp_server.py sink HOST PORT [LIFETIME]   read each connection to EOF, then reply one line
                                              "<bytes> <sha256 hex>\\n" and close (upload checks)

Logs one line per connection, "<peer address> <bytes received>", so a test can check which
address the server saw. Stops by itself after LIFETIME seconds (default 1800: bounded, like
every test server).
"""
import hashlib
import socket
import sys
import threading
import time


def echo(conn):
    n = 0
    while data := conn.recv(65536):
        n += len(data)
        conn.sendall(data)
    return n


def sink(conn):
    n, h = 0, hashlib.sha256()
    while data := conn.recv(65536):
        n += len(data)
        h.update(data)
    conn.sendall(f"{n} {h.hexdigest()}\n".encode())
    return n


def serve(handler, conn, peer):
    with conn:
        try:
            n = handler(conn)
        except OSError as e:
            print(f"{peer[0]} error {e}", flush=True)
            return
    print(f"{peer[0]} {n}", flush=True)


mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
lifetime = float(sys.argv[4]) if len(sys.argv) > 4 else 1800
handler = {"echo": echo, "sink": sink}[mode]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.create_server((host, port), family=family, backlog=128)
s.settimeout(1.0)
deadline = time.time() + lifetime
while time.time() < deadline:
    try:
        conn, peer = s.accept()
    except socket.timeout:
        continue
    conn.settimeout(600)
    threading.Thread(target=serve, args=(handler, conn, peer), daemon=True).start()
