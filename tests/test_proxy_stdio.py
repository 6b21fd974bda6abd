"""The stdio tunnel's joining (wgc.proxy.stdio.join) on a loopback kernel
connection and pipes: both directions, the half-close, a reset.
(Through the tunnel, as `wgc --proxy`: tests/test_proxy_interop.py.)"""
import errno
import os
import socket
import struct
import threading

from wgc.proxy.stdio import join


def _server(behaviour):
    listener = socket.create_server(("127.0.0.1", 0))
    result = {}

    def serve():
        conn, _ = listener.accept()
        with conn:
            behaviour(conn, result)
        listener.close()

    thread = threading.Thread(target=serve)
    thread.start()
    return listener.getsockname(), thread, result


def _upper_until_eof_then_bye(conn, result):
    received = b""
    while data := conn.recv(4096):
        received += data
        conn.sendall(data.upper())
    result["received"] = received
    conn.sendall(b"bye")            # after our FIN arrived: the half-close held the way back open


def test_bytes_both_ways_and_standard_inputs_end_half_closes():
    address, thread, result = _server(_upper_until_eof_then_bye)
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    payload = os.urandom(200_000).hex().encode()         # past a pipe's and a socket's buffers
    writer = threading.Thread(target=lambda: (os.write(in_write, payload), os.close(in_write)))
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(out_read, 65536), b"")))
    writer.start()
    reader.start()
    with socket.create_connection(address, timeout=10) as conn:
        status = join(conn, in_read, out_write)
    os.close(out_write)
    for t in (writer, reader, thread):
        t.join(10)
    os.close(in_read)
    os.close(out_read)
    assert status == 0
    assert result["received"] == payload
    assert b"".join(chunks) == payload.upper() + b"bye"


def _reset(conn, result):
    conn.recv(10)
    conn.sendall(b"partial")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_reset_from_the_far_side_ends_it_with_econnreset():
    address, thread, _ = _server(_reset)
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    os.write(in_write, b"hi")                            # standard input stays open
    with socket.create_connection(address, timeout=10) as conn:
        status = join(conn, in_read, out_write)
    thread.join(10)
    os.close(out_write)
    output = os.read(out_read, 100)
    for fd in (in_write, in_read, out_read):
        os.close(fd)
    assert status == errno.ECONNRESET
    assert output == b"partial"
