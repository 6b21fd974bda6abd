"""The HTTP proxy's request reader (wgc/proxy/http.py).

The input picks the credentials (none, or user/secret) and where to cut the
bytes, then is fed to one RequestReader whole and to another in pieces.
Invariants: nothing but HttpError is raised, whose response is a whole
4xx/5xx head; both feeds give the same request (or error status) and the
same bytes after the head; a forwarded head is itself a valid request (h11
reads it back) with an origin-form target, the target's Host, one
`Connection: close` and no Proxy-* field.
"""
import atheris
import h11

import common

with common.instrumented():
    from wgc.proxy import http

CREDENTIALS = ("user", "secret")


def feed(credentials, chunks: list[bytes]):
    reader = http.RequestReader(credentials, max_head=2048)
    found, rest = None, b""
    try:
        for chunk in chunks:
            request, used = reader.receive(chunk)
            if request is not None:
                found, rest = request, rest + chunk[used:]
            elif reader.request is not None:
                rest += chunk
            else:
                assert used == len(chunk)
    except http.HttpError as error:
        assert error.response.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5")) and b"\r\n\r\n" in error.response
        return error.status
    return found, rest


def check_forward(request: http.Forward) -> None:
    origin = h11.Connection(h11.SERVER)
    origin.receive_data(request.head)
    event = origin.next_event()
    assert isinstance(event, h11.Request), event
    assert event.target.startswith(b"/")
    names = [name for name, _ in event.headers]
    assert names.count(b"connection") == 1 and (b"connection", b"close") in list(event.headers)
    assert names.count(b"host") == 1 and not any(name.startswith(b"proxy-") for name in names)
    assert origin.trailing_data == (b"", False)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    credentials = CREDENTIALS if fdp.ConsumeBool() else None
    cuts = sorted(fdp.ConsumeIntInRange(0, 3000) for _ in range(fdp.ConsumeIntInRange(0, 6)))
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    points = [min(cut, len(body)) for cut in cuts]
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    whole = feed(credentials, [body])
    assert feed(credentials, chunks) == whole
    if isinstance(whole, tuple) and isinstance(whole[0], http.Forward):
        check_forward(whole[0])


def seeds() -> list[bytes]:
    """Requests as curl sends them: the first byte picks no authentication
    (even) or user/secret (odd), the next how many cuts (none)."""
    import base64

    authorization = b"Proxy-Authorization: Basic " + base64.b64encode(b"user:secret") + b"\r\n"
    return [
        b"\x00\x00CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/8.14.1\r\n"
        b"Proxy-Connection: Keep-Alive\r\n\r\n\x16\x03\x01",
        b"\x01\x00CONNECT [fd00::1]:22 HTTP/1.1\r\nHost: [fd00::1]:22\r\n" + authorization + b"\r\nSSH-2.0-",
        b"\x00\x00GET http://example.com:8080/a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8.14.1\r\n"
        b"Accept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n",
        b"\x01\x00POST http://10.0.0.1/form HTTP/1.1\r\nHost: 10.0.0.1\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n"
        + authorization + b"Content-Length: 4\r\n\r\nbody",
        b"\x00\x00PUT http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
        b"\x00\x00GET http://h/ HTTP/1.0\r\n\r\n",
    ]


if __name__ == "__main__":
    common.main(one_input)
