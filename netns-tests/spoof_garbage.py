#!/usr/bin/env python3
"""Send COUNT malformed datagrams that *appear* to come from the exit's transport address.

The client's UDP socket is connected to the exit, so the kernel already drops datagrams from
anyone else; to test the client's own parsers the garbage must carry the exit's source address
and port, hence a raw socket with a hand-built IPv4/UDP header (checksum 0 = none, RFC 768).
Usage: spoof_garbage.py SRC_IP SRC_PORT DST_IP DST_PORT COUNT
"""
import os
import random
import socket
import struct
import sys

src, sport, dst, dport, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(1234)


def payloads():
    """Truncated LP headers, foreign streams, bad versions, lying bundle lengths, noise."""
    lp = lambda sid, seq, body: struct.pack("<H", 3) + struct.pack(">QBIB", sid, 1, seq, 0) + body
    while True:
        yield os.urandom(rng.randrange(0, 64))                      # noise, incl. empty
        yield lp(rng.getrandbits(64), 1, b"\x0a\x00\x05\x00\x40abc")  # foreign stream
        yield struct.pack("<H", 3) + os.urandom(rng.randrange(0, 15))  # truncated LP header
        yield b"\x0a\x00\xfb\xff\xff" + os.urandom(20)                 # bare IPR, lying length


s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
gen = payloads()
for k in range(count):
    body = next(gen)
    udp = struct.pack(">HHHH", sport, dport, 8 + len(body), 0) + body
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), k & 0xFFFF, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(ip + udp, (dst, 0))
