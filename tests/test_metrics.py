"""The metrics endpoint (wgc.metrics): the exposition read back by Prometheus's
own parser, the server's answers and bounds against a stand-in device, and a
live daemon with WGC_METRICS in a namespace."""
import base64
import logging
import os
import socket
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netns import unique_name, wait_for
from test_lifecycle import IDLE_RSS_MIB
from wgc import metrics
from wgc.counters import DEVICE, PEER, DeviceSnapshot, PeerSnapshot
from wgnet import WGC, new_key, rss_kib, start_daemon

NOW = 1_700_000_000
KEY_A, KEY_B = bytes(range(32)), bytes(range(100, 132))


def snapshot(interface: str = "wg0") -> DeviceSnapshot:
    """Two peers, every figure a different number, so a value in the wrong place shows."""
    values_a = {f.name: 1000 + i for i, f in enumerate(PEER)}
    values_a["handshake_rtt_seconds"] = 0.0125
    values_b = {f.name: 2000 + i for i, f in enumerate(PEER)}
    values_b["handshake_rtt_seconds"] = 0
    return DeviceSnapshot(interface, {f.name: 10 + i for i, f in enumerate(DEVICE)}, [
        PeerSnapshot(KEY_A, ("192.0.2.1", 51820), ["10.70.0.2/32", "fd86:ea04::4/128"],
                     rx_bytes=71420072, tx_bytes=3208804, latest_handshake=NOW - 30, values=values_a),
        PeerSnapshot(KEY_B, None, [], rx_bytes=0, tx_bytes=0, latest_handshake=0, values=values_b),
    ])


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family) -> dict:
    """{frozen labels: value} of a family's samples."""
    return {frozenset(s.labels.items()): s.value for s in family.samples}


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


# render() ---------------------------------------------------------------------------

def test_every_catalogue_figure_is_a_family_with_its_type_labels_and_values():
    snap = snapshot()
    parsed = families(metrics.render(snap, NOW).decode())
    for figure in DEVICE:
        # The parser names a counter's family without its _total, its samples with it.
        family = parsed[f"wgc_{figure.name}".removesuffix("_total")]
        assert family.type == figure.kind
        assert family.documentation == figure.help
        assert samples(family) == {frozenset({("interface", "wg0")}): snap.values[figure.name]}
    for figure in PEER:
        family = parsed[f"wgc_{figure.name}".removesuffix("_total")]
        assert family.type == figure.kind
        assert samples(family) == {
            frozenset({("interface", "wg0"), ("public_key", b64(peer.public_key))}): peer.values[figure.name]
            for peer in snap.peers}
    assert len(parsed) == len(DEVICE) + len(PEER) + 5  # and the exporter's five


def test_the_exporter_families_have_its_names_types_labels_and_values():
    parsed = families(metrics.render(snapshot(), NOW).decode())
    a = frozenset({("interface", "wg0"), ("public_key", b64(KEY_A)),
                   ("allowed_ips", "10.70.0.2/32,fd86:ea04::4/128")})
    b = frozenset({("interface", "wg0"), ("public_key", b64(KEY_B)), ("allowed_ips", "(none)")})
    expected = {
        "wireguard_sent_bytes": ("counter", {a: 3208804, b: 0}),
        "wireguard_received_bytes": ("counter", {a: 71420072, b: 0}),
        "wireguard_latest_handshake_seconds": ("gauge", {a: NOW - 30, b: 0}),
        "wireguard_latest_handshake_delay_seconds": ("gauge", {a: 30, b: NOW}),
        "wireguard_peers_total": ("gauge", {frozenset({("interface", "wg0")}): 2}),
    }
    for name, (kind, values) in expected.items():
        assert (parsed[name].type, samples(parsed[name])) == (kind, values), name


def test_the_exporter_lines_are_byte_for_byte_its_own():
    """Its README's sample line, label order included (a grep or a recording rule may rely on it)."""
    text = metrics.render(snapshot(), NOW).decode()
    assert ("# HELP wireguard_sent_bytes_total Bytes sent to the peer\n"
            "# TYPE wireguard_sent_bytes_total counter\n"
            f'wireguard_sent_bytes_total{{interface="wg0",public_key="{b64(KEY_A)}",'
            'allowed_ips="10.70.0.2/32,fd86:ea04::4/128"} 3208804\n') in text
    assert 'wireguard_peers_total{interface="wg0"} 2\n' in text


def test_odd_label_values_are_escaped():
    odd = 'w"g\\n0\nx\\'  # a backslash before an n, a newline, a backslash last
    parsed = families(metrics.render(snapshot(odd), NOW).decode())
    for family in parsed.values():
        assert {s.labels["interface"] for s in family.samples} == {odd}


def test_a_device_without_peers_has_every_family_and_no_peer_samples():
    empty = DeviceSnapshot("wg0", {f.name: 0 for f in DEVICE}, [])
    parsed = families(metrics.render(empty, NOW).decode())
    assert len(parsed) == len(DEVICE) + len(PEER) + 5
    assert samples(parsed["wireguard_peers_total"]) == {frozenset({("interface", "wg0")}): 0}
    assert not parsed["wireguard_sent_bytes"].samples


# WGC_METRICS ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9586", (socket.AF_INET, ("127.0.0.1", 9586))),
    ("[::1]:9586", (socket.AF_INET6, ("::1", 9586, 0, 0))),
    (":9586", (socket.AF_INET6, ("::", 9586, 0, 0))),
    ("0.0.0.0:1", (socket.AF_INET, ("0.0.0.0", 1))),
])
def test_addresses(text, expected):
    assert metrics.parse_address(text) == expected


@pytest.mark.parametrize("text", ["9586", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                                  "127.0.0.1:-1", "localhost:9586", "::1:9586", "[::1:9586", "[1.2.3.4]:80",
                                  "1.2.3:80", "[::1]:http"])
def test_malformed_addresses(text):
    with pytest.raises(ValueError):
        metrics.parse_address(text)


def test_an_unbracketed_ipv6_address_is_told_how_to_write_it():
    with pytest.raises(ValueError, match=r"in brackets, as \[::1\]:9586"):
        metrics.parse_address("::1:9586")


# the server -------------------------------------------------------------------------

class StandInDevice:
    """What MetricsServer needs of a Device: snapshot(), here counted, or failing once."""

    def __init__(self):
        self.snapshots = 0
        self.fail_next = False

    def snapshot(self) -> DeviceSnapshot:
        self.snapshots += 1
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("a bug")
        return snapshot()


@pytest.fixture
def server():
    device = StandInDevice()
    served = metrics.MetricsServer(device, (socket.AF_INET, ("127.0.0.1", 0)), logging.getLogger("test-metrics"))
    served.start()
    yield served
    served.close()


def exchange(port: int, request: bytes) -> bytes:
    """Sends request, returns all the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_get_metrics(server):
    reply = exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n" in head
    assert f"\r\nContent-Length: {len(body)}\r\n".encode() in head
    assert families(body.decode()).keys() == families(metrics.render(snapshot(), NOW).decode()).keys()
    assert server.device.snapshots == 1


@pytest.mark.parametrize("request_, status", [
    (b"GET /metrics?x=1 HTTP/1.0\n\n", 200),
    (b"GET / HTTP/1.1\r\n\r\n", 404),
    (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"HEAD /metrics HTTP/1.1\r\n\r\n", 405),
    (b"garbage\r\n\r\n", 400),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
    (b"GET metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"G(T /metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /m\xe9trics HTTP/1.1\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS spoken to a plain port
])
def test_answers(server, request_, status):
    reply = exchange(server.port, request_)
    assert status_of(reply) == status
    assert (b"\r\nAllow: GET\r\n" in reply) == (status == 405)
    assert server.device.snapshots == (status == 200)


def test_an_oversize_request_is_refused_and_the_server_goes_on(server, monkeypatch):
    # Refused at once, not left to time out (this test's socket times out first).
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 60)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * metrics.MAX_REQUEST)
            reply = sock.recv(65536)
        except ConnectionResetError:  # refused while unread bytes were still coming
            reply = b""
        assert reply == b"" or status_of(reply) == 400
    assert server.device.snapshots == 0
    assert status_of(exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")) == 200


def test_a_reply_larger_than_the_socket_buffers_arrives_whole(server):
    """Megabytes (3,000 peers) go out in many sends, none lost or repeated."""
    base = snapshot()
    peers = [base.peers[i % 2]._replace(public_key=i.to_bytes(32, "big"), tx_bytes=i) for i in range(3000)]
    server.device.snapshot = lambda: base._replace(peers=peers)
    reply = exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
    head, body = reply.split(b"\r\n\r\n", 1)
    assert len(body) > 3 << 20 and f"\r\nContent-Length: {len(body)}\r\n".encode() in head
    sent = samples(families(body.decode())["wireguard_sent_bytes"])
    assert sorted(sent.values()) == list(range(3000))


def test_a_failing_snapshot_is_a_500_and_the_server_goes_on(server):
    server.device.fail_next = True
    assert status_of(exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")) == 500
    assert status_of(exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")) == 200


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_client_that_never_finishes_is_closed(server, monkeypatch):
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /metr")
        assert closed_by_server(sock)  # within the 10 s timeout, or recv raises
    assert status_of(exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")) == 200


def test_connections_are_bounded_the_oldest_giving_way(server):
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
            for _ in range(metrics.MAX_CONNECTIONS + 4)]
    try:
        wait_for(lambda: len(server._connections) == metrics.MAX_CONNECTIONS, what="the connections accepted")
        assert status_of(exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")) == 200
        # The five oldest gave way (four to the idle ones after them, one to the GET).
        assert all(closed_by_server(sock) for sock in idle[:5])
        for sock in idle[5:]:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):  # still open, nothing sent
                sock.recv(1)
    finally:
        for sock in idle:
            sock.close()


def test_close_ends_the_thread_and_every_connection():
    served = metrics.MetricsServer(StandInDevice(), (socket.AF_INET, ("127.0.0.1", 0)), logging.getLogger("t"))
    served.start()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        wait_for(lambda: served._connections, what="the connection accepted")
        served.close()
        assert not served._thread.is_alive()
        assert closed_by_server(sock)


@pytest.mark.netns
def test_all_addresses_take_ipv4_and_ipv6(netns):
    """":PORT" is one socket for both families (inside a namespace: it listens on every address)."""
    ns = netns("wgma")
    ns.run("ip", "link", "set", "lo", "up")
    served = metrics.MetricsServer(StandInDevice(), metrics.parse_address(":9586"), logging.getLogger("t"))
    ns.inside(served.start)
    try:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            def get(family=family, host=host):
                with socket.socket(family, socket.SOCK_STREAM) as sock:
                    sock.settimeout(10)
                    sock.connect((host, 9586))
                    sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
                    return sock.recv(12)
            assert ns.inside(get) == b"HTTP/1.1 200", host
    finally:
        served.close()


# the daemon -------------------------------------------------------------------------

@pytest.mark.netns
def test_a_malformed_variable_is_one_error_line_and_exit_1(netns):
    ns = netns("wgme")
    iface = unique_name("wgm")
    ns.owns_interface(iface)
    result = ns.run(*WGC, "-f", iface, env=dict(os.environ, WGC_METRICS="localhost:9586"),
                    check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: ({iface}) ") and "WGC_METRICS" in lines[0], lines
    assert ns.run("ip", "link", "show", iface, check=False).returncode != 0  # nothing was created


@pytest.mark.netns
def test_an_address_not_to_be_had_fails_the_start(netns):
    """192.0.2.1 is on no interface of the namespace: the child cannot listen, the parent exits 1."""
    ns = netns("wgme")
    iface = unique_name("wgm")
    ns.owns_interface(iface)
    result = ns.run(*WGC, iface, env=dict(os.environ, WGC_METRICS="192.0.2.1:9586", LOG_LEVEL="error"), check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Metrics listen error" in output and "Traceback" not in output, output
    wait_for(lambda: not ns.pids(), what="the daemon to exit")


def scrape(ns, port: int) -> bytes:
    """GET /metrics from inside the namespace."""
    def get():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            return reply
    return ns.inside(get)


@pytest.mark.netns
def test_a_live_daemon_serves_its_figures(netns):
    ns = netns("wgml")
    iface = unique_name("wgm")
    start_daemon(ns, "wgc", iface, env={"WGC_METRICS": "127.0.0.1:9586"})
    ns.run("ip", "link", "set", "lo", "up")
    private, _ = new_key()
    _, peer = new_key()
    ns.run("wg", "set", iface, "private-key", "/dev/stdin", "peer", peer, "allowed-ips", "10.9.0.2/32",
           input=private + "\n")
    reply = scrape(ns, 9586)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply[:40]
    parsed = families(reply.split(b"\r\n\r\n", 1)[1].decode())
    assert samples(parsed["wireguard_sent_bytes"]) == {
        frozenset({("interface", iface), ("public_key", peer), ("allowed_ips", "10.9.0.2/32")}): 0}
    assert samples(parsed["wireguard_peers_total"]) == {frozenset({("interface", iface)}): 1}
    for figure in DEVICE:
        assert parsed[f"wgc_{figure.name}".removesuffix("_total")].samples


@pytest.mark.netns
def test_the_endpoint_costs_little_memory(netns):
    """The idle daemon with and without WGC_METRICS: the endpoint stays within the 20 MB budget."""
    ns = netns("wgmm")
    rss = {}
    for variable in ("", "127.0.0.1:9586"):
        iface = unique_name("wgm")
        proc = ns.popen(*WGC, "-f", iface, env=dict(os.environ, WGC_METRICS=variable),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ns.owns_interface(iface)
        wait_for(lambda iface=iface: ns.run("ip", "link", "show", iface, check=False).returncode == 0,
                 what="the daemon's interface")
        time.sleep(1)  # its start-up done
        rss[variable] = rss_kib([proc.pid])  # (ip netns exec execs: proc is the daemon)
        proc.terminate()
        proc.wait(timeout=10)
    print(f"\nidle RSS without WGC_METRICS {rss[''] / 1024:.1f} MiB, "
          f"with {rss['127.0.0.1:9586'] / 1024:.1f} MiB")
    assert rss["127.0.0.1:9586"] < IDLE_RSS_MIB * 1024
