"""The UAPI text protocol, both ends: what the daemon reads and what wg(8) reads.

Control byte even: the rest is a client's byte stream on a fresh device's
control socket (wgc/uapi.py serve_connection).  Invariants: no request ever
hits an unexpected exception (errno -55 and a logged traceback); the daemon
answers with replies of the form [key=value lines]errno=N, N one of the
errnos a `set` or `get` may answer; whatever configuration the requests
left, its `get` answer is read by the built-in wg's parser
(wgc/control/userspace.py parse_get), and the `set` that parser's client
builds from it recreates the same configuration on another device.

Control byte odd: the rest is an answer to `get=1`, read by parse_get, which
may only refuse it with WireGuardError.  Endpoints are resolved numerically
only (common.numeric_resolver): names would be DNS look-ups.
"""
import errno
import logging
import socket

import common

with common.instrumented():
    from wgc import uapi
    from wgc.control import userspace
    from wgc.device import Device
    from wgc.errors import WireGuardError

common.numeric_resolver()
ANSWERS = {0, -errno.EIO, -errno.EPROTO, -errno.EINVAL}
STATISTICS = ("last_handshake_time_sec=", "last_handshake_time_nsec=", "tx_bytes=", "rx_bytes=")


class Tracebacks(logging.Handler):
    """Fails the input on any log record that carries an exception."""

    def emit(self, record):
        assert record.exc_info is None, self.format(record)


LOG = logging.getLogger("wgc.fuzz")
for name in ("wgc", "wgc.fuzz"):
    logging.getLogger(name).handlers[:] = [Tracebacks()]
    logging.getLogger(name).propagate = False


def serve(device, stream: bytes) -> bytes:
    """What the daemon answers a client that sends stream and then closes: a
    uapi.Session fed the bytes and the end of input, as the server does."""
    session = uapi.Session(device)
    pieces = [stream, b""]
    while (waiting := session.step()) is not None:
        if waiting is uapi.INPUT:
            session.feed(pieces.pop(0) if pieces else b"")
    return bytes(session.output)


def check_replies(output: bytes) -> None:
    assert output.endswith(b"\n\n") or not output, output[-200:]
    for reply in output.split(b"\n\n")[:-1]:
        *body, last = reply.decode("ascii").split("\n")
        assert last.startswith("errno=") and int(last[6:]) in ANSWERS, last
        assert all("=" in line for line in body)


def configuration(device) -> str:
    """The `get` answer without the statistics nobody can set."""
    lines = uapi.handle_get(device).decode("ascii").splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith(STATISTICS))


def one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        try:
            userspace.parse_get("fuzz", data[1:])
        except WireGuardError:
            pass
        return
    device = Device("fuzz", None, LOG)
    copy = Device("copy", None, LOG)
    try:
        check_replies(serve(device, data[1:]))
        answer = bytes(uapi.handle_get(device)) + b"errno=0\n\n"
        read = userspace.parse_get("fuzz", answer)
        request = userspace.build_set(read.config(), replace_peers=True)
        assert serve(copy, request) == b"errno=0\n\n"
        assert configuration(copy) == configuration(device)
    finally:
        device.close()
        copy.close()


def seeds() -> list[bytes]:
    """wg(8)'s own requests (from build_set) and a real answer of this daemon."""
    from protocol_net import Pair

    pair = Pair(psk=bytes(range(32)))
    pair.send(pair.a)
    pair.pump()
    peer = pair.a.device.peer(pair.b.public_key)
    peer.set_persistent_keepalive(25)
    peer.add_allowed_ip(socket.inet_pton(socket.AF_INET6, "fd00::"), 64)
    pair.a.device.set_listen_port(51820)
    pair.a.device.set_fwmark(0x1234)
    answer = bytes(uapi.handle_get(pair.a.device)) + b"errno=0\n\n"
    request = userspace.build_set(userspace.parse_get("a", answer).config(), replace_peers=True)
    scoped = request.replace(b"endpoint=127.0.0.2:51002", b"endpoint=[fe80::1%1]:51002")
    return [b"\0" + request + b"get=1\n\n", b"\0" + scoped + b"get=1\n\n", b"\0get=1\n\n", b"\1" + answer]


if __name__ == "__main__":
    common.main(one_input)
