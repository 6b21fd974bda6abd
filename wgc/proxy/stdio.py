"""The stdio tunnel: standard input and output joined to one TCP connection,
for `ssh -o ProxyCommand='wgc --proxy stdio.conf'` and the like.

Standard input's end of file half-closes the connection (the far side reads
its end and may still answer); the tunnel ends when the far side has closed
its sending side and everything it sent is written out.
"""
from __future__ import annotations

import errno
import os
import socket
import threading

CHUNK = 1 << 16


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _upstream(conn: socket.socket, stdin: int) -> None:
    """Standard input to the connection; its end of file becomes our FIN."""
    try:
        while data := os.read(stdin, CHUNK):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass                       # the connection ended first: the other direction says how


def join(conn: socket.socket, stdin: int = 0, stdout: int = 1) -> int:
    """Moves bytes both ways until the far side closes; 0, or the errno that
    ended it (a reset, or standard output gone)."""
    threading.Thread(target=_upstream, args=(conn, stdin), name="wgc-stdio-in", daemon=True).start()
    try:
        while data := conn.recv(CHUNK):
            _write_all(stdout, data)
    except OSError as error:
        return error.errno or errno.EIO
    return 0
