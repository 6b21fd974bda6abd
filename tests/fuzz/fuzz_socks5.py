"""The SOCKS5 server handshake and UDP header (wgc/proxy/socks5.py).

The input picks the credentials (none, or user/secret) and where to cut the
bytes, then is fed to one Server whole and to another in pieces.
Invariants: nothing but SocksError is raised, with bytes to send; both
feeds send the same bytes and give the same events (or the same error) and
the same bytes after the request; before the request every byte is taken and at most one message
(513 bytes) is kept.  The input read as a UDP datagram parses to a
Datagram, None (a fragment) or SocksError, and what build_udp makes of a
Datagram parses back to the same, once the host is in its usual form.
"""
import atheris

import common

with common.instrumented():
    from wgc.proxy import socks5

CREDENTIALS = ("user", "secret")


def feed(credentials, chunks: list[bytes]):
    """(the bytes to send, the events if no error, the bytes after the request, the error's text)."""
    server = socks5.Server(credentials)
    events, rest = [], b""
    try:
        for chunk in chunks:
            got, used = server.receive(chunk)
            events += got
            if server.done:
                rest += chunk[used:]
            else:
                assert used == len(chunk)
                assert len(server._buffer) <= 513
    except socks5.SocksError as error:
        assert isinstance(error.reply, bytes) and str(error)
        return b"".join(event.reply for event in events) + error.reply, None, rest, str(error)
    return b"".join(event.reply for event in events), events, rest, None


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    credentials = CREDENTIALS if fdp.ConsumeBool() else None
    cuts = sorted(fdp.ConsumeIntInRange(0, 600) for _ in range(fdp.ConsumeIntInRange(0, 6)))
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    points = [min(cut, len(body)) for cut in cuts]
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert feed(credentials, chunks) == feed(credentials, [body])

    try:
        datagram = socks5.parse_udp(body)
    except socks5.SocksError:
        return
    if datagram is None:
        assert body[2] != 0
        return
    again = socks5.parse_udp(socks5.build_udp(datagram.host, datagram.port, datagram.data))
    assert again is not None and (again.port, again.data) == (datagram.port, datagram.data)
    third = socks5.parse_udp(socks5.build_udp(again.host, again.port, again.data))
    assert third == again


def seeds() -> list[bytes]:
    """Whole exchanges as clients send them: the first byte picks no
    authentication (even) or user/secret (odd), the next few where to cut."""
    no_cuts = bytes([0])
    return [
        b"\x00" + no_cuts + b"\x05\x01\x00" + b"\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50GET / HTTP/1.0\r\n\r\n",
        b"\x00" + no_cuts + b"\x05\x01\x00" + b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x01\xbb",
        b"\x00" + no_cuts + b"\x05\x01\x00" + b"\x05\x03\x00\x03\x0bexample.com\x00\x35",
        b"\x01" + no_cuts + b"\x05\x02\x00\x02" + b"\x01\x04user\x06secret"
        + b"\x05\x01\x00\x03\x0bexample.com\x00\x16",
        b"\x01" + no_cuts + b"\x05\x02\x00\x02" + b"\x01\x04user\x06wrong!",
        b"\x00" + no_cuts + b"\x00\x00\x00\x01\x0a\x00\x00\x01\x00\x35query",
        b"\x00" + no_cuts + b"\x00\x00\x00\x03\x0bexample.com\x00\x35query",
    ]


if __name__ == "__main__":
    common.main(one_input)
