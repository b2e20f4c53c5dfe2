#!/usr/bin/env python3
"""Stand-ins for the host's resolver sockets (nscd, systemd-resolved's varlink), and a probe.

  unix_probe.py listen PATH...   bind a world-connectable Unix socket at each PATH, print
                                 "ready", then accept and close connections until killed
  unix_probe.py connect PATH...  print "PATH reached" or "PATH <errno name>" for each PATH
"""
import errno
import os
import selectors
import socket
import sys


def listen(paths):
    sel = selectors.DefaultSelector()
    for p in paths:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(p)
        os.chmod(p, 0o777)  # any uid may connect: only the mount namespace decides
        s.listen(16)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _ = key.fileobj.accept()
            conn.close()


def connect(paths):
    for p in paths:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(p)
            print(p, "reached")
        except OSError as e:
            print(p, errno.errorcode.get(e.errno, str(e.errno)))
        finally:
            s.close()


if __name__ == "__main__":
    {"listen": listen, "connect": connect}[sys.argv[1]](sys.argv[2:])
