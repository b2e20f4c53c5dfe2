#!/usr/bin/env python3
"""UDP echo server for the netns suites: replies to every datagram with the same bytes.

Also logs the source address of each datagram, so a test can check that the server only ever
sees the exit's address. Stops by itself after 30 minutes, or the optional third argument's
seconds (bounded, like every test server).
"""
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((host, port))
s.settimeout(1.0)
deadline = time.time() + (float(sys.argv[3]) if len(sys.argv) > 3 else 1800)
while time.time() < deadline:
    try:
        data, peer = s.recvfrom(65535)
    except socket.timeout:
        continue
    print(f"{peer[0]} {len(data)}", flush=True)
    s.sendto(data, peer)
