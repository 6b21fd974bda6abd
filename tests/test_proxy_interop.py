"""wgc --proxy as its users run it, with real clients (curl, iperf3, PySocks,
a ProxyCommand-style pipe, dnspython), against servers behind a WireGuard
daemon with a TUN: wgc's, and Debian's wireguard-go.  The proxy runs with
no capabilities and no /dev/net/tun, as nobody in the binary tier
(tests/proxy_site.py)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import webserver
from netns import start_dnsmasq, wait_for
from proxy_site import FAR4, FAR6, NEAR4, UNPRIVILEGED, Site
from wgnet import WGC, have, new_key, rss_kib

pytestmark = pytest.mark.netns

HTTP_PORT, ECHO_PORT, UDP_ECHO_PORT = 8080, 7007, 7008
BODY = b"behind the tunnel\n"

# The far side's services: an HTTP server, a TCP echo that also tells the peer
# it saw, and a UDP echo, each on every address (dual stack).
FAR_SERVERS = """
    import http.server, socket, socketserver, sys, threading
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            body = b"behind the tunnel\\n" if self.path != "/big" else bytes(4 << 20)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Seen-Host", self.headers.get("Host", ""))
            self.send_header("X-Seen-Proxy-Headers", str(sum(k.lower().startswith("proxy-") for k in self.headers)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6
    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(f"from {self.client_address[0]}\\n".encode())
            while data := self.request.recv(65536):
                self.request.sendall(data)
    class EchoServer(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6
        allow_reuse_address = True
        daemon_threads = True
    def udp_echo():
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::", int(sys.argv[3])))
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(b"echo:" + data, peer)
    http_server = Server(("::", int(sys.argv[1])), Handler)
    echo_server = EchoServer(("::", int(sys.argv[2])), Echo)
    for target in (http_server.serve_forever, echo_server.serve_forever, udp_echo):
        threading.Thread(target=target, daemon=True).start()
    print("listening", flush=True)
    threading.Event().wait()
"""


def _start_far(site: Site) -> None:
    servers = site.far_python(FAR_SERVERS, str(HTTP_PORT), str(ECHO_PORT), str(UDP_ECHO_PORT))
    assert servers.stdout.readline().strip() == "listening", servers.stderr.read()


def _dnsmasq(site: Site) -> None:
    hosts = os.path.join(site.home, "hosts")
    with open(hosts, "w") as f:
        f.write(f"{FAR4} far.test\n{FAR6} far.test\n")
    start_dnsmasq(site.far, FAR4, f"--addn-hosts={hosts}", "--local=/test/")


@pytest.fixture(params=["wgc", "wireguard-go"])
def site(netns, request):
    if not have(request.param):
        pytest.fail(f"{request.param} is not installed")
    s = Site(netns, request.param)
    try:
        _start_far(s)
        yield s
    finally:
        s.close()


@pytest.fixture
def wgc_site(netns):
    s = Site(netns, "wgc")
    try:
        _start_far(s)
        yield s
    finally:
        s.close()


def curl(site: Site, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return site.near.run("curl", "--silent", "--show-error", "--max-time", str(int(timeout)), *args,
                         check=False, timeout=timeout + 10)


SERVICES = f"""
[Socks5]
BindAddress = 127.0.0.1:1080

[http]
BindAddress = 127.0.0.1:3128

[TCPClientTunnel]
BindAddress = 127.0.0.1:{ECHO_PORT}
Target = {FAR4}:{ECHO_PORT}
"""


def test_curl_through_socks5_and_the_http_proxy(site):
    _dnsmasq(site)
    site.start(SERVICES, [("127.0.0.1", 1080), ("127.0.0.1", 3128)], dns=FAR4)
    url = f"http://far.test:{HTTP_PORT}/"
    by_name = curl(site, "--socks5-hostname", "127.0.0.1:1080", "-D", "-", url)   # the proxy resolves
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.endswith(BODY.decode())
    ipv6 = curl(site, "--socks5", "127.0.0.1:1080", f"http://[{FAR6}]:{HTTP_PORT}/")
    assert ipv6.returncode == 0 and ipv6.stdout == BODY.decode(), ipv6.stderr
    plain = curl(site, "-x", "http://127.0.0.1:3128", "-D", "-", "--proxy-user", "", url)
    assert plain.returncode == 0, plain.stderr
    assert f"X-Seen-Host: far.test:{HTTP_PORT}" in plain.stdout
    assert "X-Seen-Proxy-Headers: 0" in plain.stdout          # curl's Proxy-Connection stays with the proxy
    tunnel = curl(site, "-x", "http://127.0.0.1:3128", "--proxytunnel", "-o", "/dev/null",
                  "-w", "%{size_download}", f"http://{FAR4}:{HTTP_PORT}/big")
    assert tunnel.returncode == 0 and tunnel.stdout == str(4 << 20), tunnel.stderr


def test_socks5_and_http_errors_for_a_far_side_that_refuses(wgc_site):
    site = wgc_site
    site.start(SERVICES, [("127.0.0.1", 1080), ("127.0.0.1", 3128)])
    refused = curl(site, "--socks5", "127.0.0.1:1080", f"http://{FAR4}:9/")
    assert refused.returncode == 97 and "(5)" in refused.stderr, refused.stderr      # 5: connection refused
    bad_gateway = curl(site, "-x", "http://127.0.0.1:3128", "-o", "/dev/null", "-w", "%{http_code}",
                       f"http://{FAR4}:9/")
    assert bad_gateway.stdout == "502"
    unknown = curl(site, "--socks5-hostname", "127.0.0.1:1080", "http://nowhere.test/")   # no DNS configured
    assert unknown.returncode == 97, unknown.stderr
    still = curl(site, "--socks5", "127.0.0.1:1080", f"http://{FAR4}:{HTTP_PORT}/")
    assert still.stdout == BODY.decode()


SOCKS_UDP_CLIENT = """
    import socket, sys, socks
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, "127.0.0.1", 1080)
    s.settimeout(10)
    for i in range(3):
        s.sendto(b"datagram %d" % i, (sys.argv[1], int(sys.argv[2])))
        data, source = s.recvfrom(65535)
        print(data.decode(), source[0], source[1], flush=True)
"""


def test_socks5_udp_associate_with_pysocks(site):
    site.start(SERVICES, [("127.0.0.1", 1080)])
    client = site.near_python(SOCKS_UDP_CLIENT, FAR4, str(UDP_ECHO_PORT),
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, err
    assert out.splitlines() == [f"echo:datagram {i} {FAR4} {UDP_ECHO_PORT}" for i in range(3)]


def test_a_tcp_forward_carries_iperf3(wgc_site):
    site = wgc_site
    site.far.popen("iperf3", "--server", "--bind", FAR4, "--port", "5201",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: site.far.run("ss", "-ltn", "sport = 5201").stdout.count("LISTEN") > 0, timeout=10,
             what="iperf3 listening")
    site.start(f"[TCPClientTunnel]\nBindAddress = 127.0.0.1:5201\nTarget = {FAR4}:5201\n", [("127.0.0.1", 5201)])
    run = site.near.run("iperf3", "--client", "127.0.0.1", "--port", "5201", "--time", "2", "--json",
                        timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert "sum_received" in result["end"], run.stdout[-2000:]
    assert result["end"]["sum_received"]["bytes"] > 1 << 20


def test_a_dns_query_through_a_udp_forward(wgc_site):
    site = wgc_site
    _dnsmasq(site)
    site.start(f"[UDPClientTunnel]\nBindAddress = 127.0.0.1:5353\nTarget = {FAR4}:53\n", [])
    query = site.near_python("""
        import sys, dns.message, dns.query
        for attempt in range(20):
            try:
                answer = dns.query.udp(dns.message.make_query("far.test", "A"), "127.0.0.1", port=5353, timeout=1)
                break
            except dns.exception.Timeout:
                continue
        print(answer.answer[0][0].address)
    """, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    out, err = query.communicate(timeout=60)
    assert out.strip() == FAR4, err


def test_stdio_tunnel_as_a_proxy_command(wgc_site):
    site = wgc_site
    config = site.write_config(site.interface_section() + f"\n[STDIOTunnel]\nTarget = {FAR4}:{ECHO_PORT}\n")
    proxy = site.near.popen(*site.proxy_command(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, LOG_LEVEL="verbose"))
    payload = os.urandom(300_000)
    out, err = proxy.communicate(payload, timeout=60)
    assert proxy.returncode == 0, err
    assert out == f"from ::ffff:{NEAR4}\n".encode() + payload   # nothing but the stream on stdout
    assert b"DEBUG" in err                                     # the log went to stderr




def test_services_exposed_on_the_tunnel(site):
    local = site.near_python(webserver.SCRIPT, "127.0.0.1", "8000", "local service, from {client}")
    assert local.stdout.readline().strip() == "listening"
    site.start("[TCPServerTunnel]\nListenPort = 8081\nTarget = 127.0.0.1:8000\n\n"
               f"[UDPServerTunnel]\nListenPort = 5300\nTarget = 127.0.0.1:{UDP_ECHO_PORT}\n", [])
    echo = site.near_python("""
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", int(sys.argv[1])))
        print("listening", flush=True)
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(b"local:" + data, peer)
    """, str(UDP_ECHO_PORT))
    assert echo.stdout.readline().strip() == "listening"
    for address in (NEAR4, "[fd00:9::2]"):
        wait_for(lambda a=address: site.far.run("curl", "-s", "--max-time", "3", f"http://{a}:8081/",
                                                check=False).returncode == 0, timeout=20, what="the exposed port")
        got = site.far.run("curl", "-s", "--max-time", "5", f"http://{address}:8081/").stdout
        assert got == "local service, from 127.0.0.1"
    ask = site.far_python("""
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        for attempt in range(10):
            s.sendto(b"ping", (sys.argv[1], 5300))
            try:
                print(s.recv(100).decode())
                break
            except TimeoutError:
                continue
    """, NEAR4)
    out, err = ask.communicate(timeout=30)
    assert out.strip() == "local:ping", err


def test_wg_shows_and_changes_a_running_proxy(wgc_site):
    site = wgc_site
    site.start(SERVICES, [("127.0.0.1", 1080)])
    env = dict(os.environ, XDG_RUNTIME_DIR=site.runtime)
    show = site.near.run(*UNPRIVILEGED, *WGC, "--wg", "show", site.name, "peers", env=env, check=False)
    assert show.returncode == 0 and show.stdout.strip() == site.far_public, show.stderr
    _, extra = new_key()
    change = site.near.run(*UNPRIVILEGED, *WGC, "--wg", "set", site.name, "peer", extra, "allowed-ips",
                           "10.77.0.0/24", env=env, check=False)
    assert change.returncode == 0, change.stderr
    assert extra in site.near.run(*UNPRIVILEGED, *WGC, "--wg", "show", site.name, "peers", env=env).stdout


def test_bad_configurations_are_one_line_errors(wgc_site, tmp_path):
    site = wgc_site
    first = len(site.interface_section().splitlines()) + 1      # the line after the [Interface] and [Peer]
    cases = {
        "[Socks5]\nBindAddress = nonsense\n": f".conf:{first + 1}: [Socks5] BindAddress: not HOST:PORT",
        "[Socks5]\nBindAddress = 127.0.0.1:1080\n[Nope]\n": f".conf:{first + 2}: unknown section",
    }
    for sections, expected in cases.items():
        config = site.write_config(site.interface_section() + sections)
        run = site.near.run(*site.proxy_command(config), check=False)
        assert run.returncode == 1, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], run.stderr
    site.near_python("""
        import socket, time
        s = socket.create_server(("127.0.0.1", 1080))
        print("listening", flush=True)
        time.sleep(60)
    """).stdout.readline()
    config = site.write_config(site.interface_section() + "[Socks5]\nBindAddress = 127.0.0.1:1080\n")
    run = site.near.run(*site.proxy_command(config), check=False)
    assert run.returncode == 1 and run.stderr.strip() == "wgc: cannot listen on 127.0.0.1:1080: Address already in use"


def test_idle_and_half_finished_clients_are_timed_out_and_others_served(wgc_site):
    site = wgc_site
    proxy = site.start(SERVICES, [("127.0.0.1", 1080)])
    holder = site.near_python("""
        import resource, socket, sys, time
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
        held = [socket.create_connection(("127.0.0.1", 1080)) for _ in range(2000)]
        held[0].sendall(b"\\x05\\x01\\x00")             # a greeting, then silence
        print("holding", flush=True)
        ended = 0
        deadline = time.monotonic() + 25
        for s in held:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while s.recv(100):
                    pass
                ended += 1
            except ConnectionResetError:
                ended += 1
            except TimeoutError:
                pass
        print(ended, flush=True)
    """)
    assert holder.stdout.readline().strip() == "holding"
    served = curl(site, "--socks5", "127.0.0.1:1080", f"http://{FAR4}:{HTTP_PORT}/")
    assert served.stdout == BODY.decode(), served.stderr          # the others wait; this one is served
    rss = rss_kib([proxy.pid])
    out, err = holder.communicate(timeout=60)
    assert out.splitlines()[-1] == "2000", err                    # every idle client closed by the timeout
    assert rss < 64 << 10, f"{rss} KiB with 2000 idle clients"


def test_the_proxy_ends_on_sigterm_and_leaves_no_socket(wgc_site):
    site = wgc_site
    proxy = site.start(SERVICES, [("127.0.0.1", 1080)])
    socket_file = site.control_socket()
    wait_for(lambda: os.path.exists(socket_file), what="the control socket")
    proxy.terminate()
    assert proxy.wait(10) == 0
    assert not os.path.exists(socket_file)


def test_malformed_requests_get_their_protocols_error(wgc_site):
    site = wgc_site
    site.start(SERVICES, [("127.0.0.1", 1080), ("127.0.0.1", 3128)])
    probe = site.near_python("""
        import socket
        def ask(port, data):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(data)
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
                return answer
        print(ask(1080, b"\\x05\\x01\\x00\\x05\\x02\\x00\\x01\\x0a\\x09\\x00\\x01\\x00\\x50").hex())   # BIND
        print(ask(1080, b"\\x04\\x01\\x00\\x50\\x0a\\x09\\x00\\x01\\x00").hex())                     # SOCKS4
        # not a proxy request (origin-form target), then not HTTP at all
        print(ask(3128, b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n").split(b"\\r\\n")[0].decode())
        print(ask(3128, b"\\x16\\x03\\x01garbage\\r\\n\\r\\n").split(b"\\r\\n")[0].decode())
    """)
    out, err = probe.communicate(timeout=30)
    lines = out.splitlines()
    assert lines[0] == "0500" + "05070001" + "00000000" + "0000", err    # no-auth, then command not supported
    assert lines[1] == ""                                               # not SOCKS5: closed without a word
    assert lines[2].startswith("HTTP/1.1 400")
    assert lines[3].startswith("HTTP/1.1 400")


def test_as_a_containers_pid_1_it_ends_on_sigterm(wgc_site):
    """A container's init gets no default signal actions: the proxy must
    handle SIGTERM itself (docker stop), here as PID 1 of a PID namespace."""
    site = wgc_site
    config = site.write_config(site.interface_section() + SERVICES)
    init = site.near.popen("unshare", "--pid", "--fork", "--mount-proc", *site.proxy_command(config),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: init.poll() is not None or _children(init.pid), timeout=10, what="the namespace's init")
        pid1 = _children(init.pid)[0]
        wait_for(lambda: init.poll() is not None or site._accepts("127.0.0.1", 1080), timeout=30,
                 what="the proxy listening")
        with open(f"/proc/{pid1}/status") as f:
            assert next(line for line in f if line.startswith("NSpid:")).split()[-1] == "1"
        os.kill(pid1, signal.SIGTERM)
        assert init.wait(10) == 0, init.stderr.read()
    finally:
        if init.poll() is None:
            init.kill()
            init.wait()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except FileNotFoundError:
        return []


def test_a_far_side_that_never_answers_times_out(wgc_site):
    """SYNs to a port the far side drops: after the connect timeout (10 s),
    SOCKS5 answers 6 (TTL expired, as curl words a timeout) and HTTP 504."""
    site = wgc_site
    site.far.run("nft", "add table inet blackhole")
    site.far.run("nft", "add chain inet blackhole input { type filter hook input priority 0 ; }")
    site.far.run("nft", "add rule inet blackhole input tcp dport 9999 drop")
    site.start(SERVICES, [("127.0.0.1", 1080), ("127.0.0.1", 3128)])
    started = time.monotonic()
    socks = curl(site, "--socks5", "127.0.0.1:1080", f"http://{FAR4}:9999/")
    assert socks.returncode == 97 and "(6)" in socks.stderr, socks.stderr
    http = curl(site, "-x", "http://127.0.0.1:3128", "-o", "/dev/null", "-w", "%{http_code}", f"http://{FAR4}:9999/")
    assert http.stdout == "504"
    assert time.monotonic() - started > 2 * 9
