"""wgc.proxy.http: request heads written out, curl as a real client on
loopback, and properties over any split and any input."""
import base64
import socket
import subprocess
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgc.proxy import http
from wgc.proxy.http import CONNECTION_ESTABLISHED, Connect, Forward, HttpError, RequestReader

CREDENTIALS = ("user", "secret")
AUTHORIZATION = "Proxy-Authorization: Basic " + base64.b64encode(b"user:secret").decode() + "\r\n"
CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: t\r\n\r\n"
GET = (b"GET http://example.com/index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n"
       b"Accept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n")


def refused(data: bytes, credentials=None, **options) -> HttpError:
    with pytest.raises(HttpError) as caught:
        RequestReader(credentials, **options).receive(data)
    return caught.value


# -- known answers ------------------------------------------------------------------------


def test_connect():
    request, used = RequestReader().receive(CONNECT + b"\x16\x03\x01")
    assert request == Connect("example.com", 443)
    assert (CONNECT + b"\x16\x03\x01")[used:] == b"\x16\x03\x01"
    assert CONNECTION_ESTABLISHED == b"HTTP/1.1 200 Connection established\r\n\r\n"


@pytest.mark.parametrize(("target", "host", "port"), [
    (b"[fd00::1]:22", "fd00::1", 22), (b"10.0.0.1:8443", "10.0.0.1", 8443), (b"a-b_c.example:1", "a-b_c.example", 1)])
def test_connect_targets(target, host, port):
    head = b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n"
    assert RequestReader().receive(head)[0] == Connect(host, port)


@pytest.mark.parametrize("target", [b"example.com", b"example.com:0", b"example.com:65536", b"example.com:x",
                                    b"[fd00::1]", b"[zz::1]:1", b"exa mple.com:1", b"a@b:1", b"[::1]x:1"])
def test_connect_needs_host_and_port(target):
    head = b"CONNECT " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert refused(head).status == 400


def test_forward_rewrites_the_head():
    request, used = RequestReader().receive(GET)
    assert request == Forward("example.com", 80, b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
                                                 b"User-Agent: t\r\nAccept: */*\r\nConnection: close\r\n\r\n")
    assert used == len(GET)


def test_forward_drops_hop_by_hop_and_named_fields_and_keeps_the_body():
    head = (b"POST http://[fd00::5]:8080 HTTP/1.1\r\nHost: wrong.example\r\nConnection: keep-alive, X-Secret\r\n"
            b"X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\n" + AUTHORIZATION.encode()
            + b"X-Kept: yes\r\nContent-Length: 4\r\n\r\n")
    request, used = RequestReader(CREDENTIALS).receive(head + b"body")
    assert request == Forward("fd00::5", 8080, b"POST / HTTP/1.1\r\nHost: [fd00::5]:8080\r\nX-Kept: yes\r\n"
                                              b"Content-Length: 4\r\nConnection: close\r\n\r\n")
    assert (head + b"body")[used:] == b"body"


def test_forward_unfolds_obsolete_line_folding():
    # RFC 9112 section 5.2: a proxy rejects obs-fold or replaces it with spaces.
    request, _ = RequestReader().receive(b"GET http://x/ HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n")
    assert request.head == b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1 2\r\nConnection: close\r\n\r\n"


def test_forward_keeps_chunked_framing():
    head = b"PUT http://h.example/u HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    request, _ = RequestReader().receive(head + b"4\r\nbody\r\n0\r\n\r\n")
    assert b"\r\nTransfer-Encoding: chunked\r\n" in request.head


@pytest.mark.parametrize(("head", "status"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),                                    # origin-form: not a proxy request
    (b"GET https://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),                           # TLS goes through CONNECT
    (b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET http://u:p@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),                                       # HTTP/1.1 without Host
    (b"POST http://x/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET http://x/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),                 # TLS to the proxy port
])
def test_bad_requests(head, status):
    error = refused(head)
    assert error.status == status
    assert error.response.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\nConnection: close\r\n" in error.response


def test_malformed_head_message_quotes_no_credentials():
    head = b"GET http://x/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization : Basic dXNlcjpzZWNyZXQ=\r\n\r\n"
    assert str(refused(head)) == "bad request: illegal header line"


def test_head_size_is_bounded():
    head = b"GET http://x/ HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n"
    reader = RequestReader(max_head=4096)
    with pytest.raises(HttpError) as caught:
        for _ in range(30):
            reader.receive(head)
            head = b"X-Pad: " + b"a" * 200 + b"\r\n"
    assert caught.value.status == 431
    assert caught.value.response.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


@pytest.mark.parametrize("authorization", [
    None, "Proxy-Authorization: Basic " + base64.b64encode(b"user:wrong").decode(),
    "Proxy-Authorization: Basic " + base64.b64encode(b"usersecret").decode(),
    "Proxy-Authorization: Bearer " + base64.b64encode(b"user:secret").decode(),
    "Proxy-Authorization: Basic !!!", "Authorization: Basic " + base64.b64encode(b"user:secret").decode()])
def test_authentication_required(authorization):
    head = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
    head += (authorization + "\r\n").encode() if authorization else b""
    error = refused(head + b"\r\n", CREDENTIALS)
    assert error.status == 407
    assert b'\r\nProxy-Authenticate: Basic realm="wgc"\r\n' in error.response
    assert b"secret" not in error.response and "secret" not in str(error)


def test_authenticated():
    head = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n" + AUTHORIZATION.encode() + b"\r\n"
    assert RequestReader(CREDENTIALS).receive(head)[0] == Connect("example.com", 443)


def test_responses():
    assert http.response(502) == (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
                                  b"Connection: close\r\n\r\n502 Bad Gateway\n")
    for status in (400, 403, 407, 431, 502, 504):
        assert http.response(status).startswith(f"HTTP/1.1 {status} ".encode())


def test_done_reader_takes_nothing_more():
    reader = RequestReader()
    reader.receive(CONNECT)
    assert reader.receive(b"tunnel bytes") == (None, 0)


# -- properties ------------------------------------------------------------------------------

EXCHANGES = [(None, CONNECT), (None, GET), (CREDENTIALS, CONNECT.replace(b"\r\n\r\n", b"\r\n" + AUTHORIZATION.encode()
                                                                          + b"\r\n"))]


def feed(credentials, chunks):
    reader = RequestReader(credentials)
    found, rest = [], b""
    for chunk in chunks:
        request, used = reader.receive(chunk)
        if request is not None:
            found.append(request)
            rest += chunk[used:]
        elif reader.request is not None:
            rest += chunk
        else:
            assert used == len(chunk)
    return found, rest


@given(st.sampled_from(EXCHANGES), st.binary(max_size=20), st.lists(st.integers(0, 300), max_size=8))
def test_any_split_gives_the_same_request(exchange, tail, cuts):
    credentials, data = exchange
    data += tail
    whole = feed(credentials, [data])
    points = sorted({min(cut, len(data)) for cut in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed(credentials, chunks) == whole
    assert len(whole[0]) == 1 and whole[1] == tail


@given(st.sampled_from([None, CREDENTIALS]),
       st.lists(st.one_of(st.binary(max_size=200), st.sampled_from([CONNECT, GET, b"\r\n", b": ", b"HTTP/1.1"])),
                max_size=6))
def test_any_input_raises_only_http_error(credentials, chunks):
    reader = RequestReader(credentials, max_head=1024)
    try:
        for chunk in chunks:
            reader.receive(chunk)
    except HttpError as error:
        assert error.response.startswith(b"HTTP/1.1 4") or error.response.startswith(b"HTTP/1.1 5")


# -- a real client ---------------------------------------------------------------------------


def serve_once(listener: socket.socket, credentials, seen: list):
    """One client: reads its request as the proxy will, answers as an origin would."""
    conn, _ = listener.accept()
    with conn:
        reader = RequestReader(credentials)
        request = None
        while request is None:
            data = conn.recv(4096)
            if not data:
                return
            try:
                request, used = reader.receive(data)
            except HttpError as error:
                seen.append(error)
                conn.sendall(error.response)
                return
        seen.append(request)
        rest = data[used:]
        if isinstance(request, Connect):
            conn.sendall(CONNECTION_ESTABLISHED)
            while b"\r\n\r\n" not in rest:
                rest += conn.recv(4096)
            seen.append(rest)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nthrough")


def curl(arguments: list[str], credentials=None):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        seen: list = []
        thread = threading.Thread(target=serve_once, args=(listener, credentials, seen))
        thread.start()
        port = listener.getsockname()[1]
        done = subprocess.run(["curl", "-sS", "--max-time", "10", "-x", f"http://127.0.0.1:{port}", *arguments],
                              capture_output=True, timeout=30)
        thread.join(10)
    return done, seen


def test_curl_plain_get():
    done, seen = curl(["http://www.example.test:8080/a?b=c", "-H", "X-Test: 1"])
    assert done.stdout == b"through", done.stderr
    assert seen[0].host == "www.example.test" and seen[0].port == 8080
    assert seen[0].head.startswith(b"GET /a?b=c HTTP/1.1\r\nHost: www.example.test:8080\r\n")
    assert b"\r\nX-Test: 1\r\n" in seen[0].head and b"Proxy-Connection" not in seen[0].head


def test_curl_connect():
    done, seen = curl(["--proxytunnel", "http://[fd00::7]:8080/x"])
    assert done.stdout == b"through", done.stderr
    assert seen[0] == Connect("fd00::7", 8080)
    assert seen[1].startswith(b"GET /x HTTP/1.1\r\nHost: [fd00::7]:8080\r\n")


def test_curl_basic_authentication():
    done, seen = curl(["--proxy-user", "user:secret", "--proxytunnel", "http://a.test/"], CREDENTIALS)
    assert done.stdout == b"through", done.stderr
    for refused_user in ([], ["--proxy-user", "user:wrong"]):
        done, seen = curl([*refused_user, "--proxytunnel", "http://a.test/"], CREDENTIALS)
        assert done.returncode != 0 and seen[0].status == 407
