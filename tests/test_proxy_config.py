"""wgc.proxy.config: wireproxy's configuration format, its errors (file,
line, field, and never a key or password), and the Net it describes."""
import os
import socket
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgc._crypto import clamp, public_key
from wgc.control.model import key_to_base64
from wgc.netstack.net import ConfigError, Net
from wgc.proxy.config import (
    HostPort,
    HttpProxy,
    NetConfig,
    Socks5,
    StdioTunnel,
    TcpClientTunnel,
    TcpServerTunnel,
    UdpClientTunnel,
    UdpServerTunnel,
    load,
    parse,
)

PRIVATE = key_to_base64(clamp(bytes(range(32))))
PEER = key_to_base64(public_key(clamp(bytes(range(1, 33)))))
PSK = key_to_base64(bytes(range(2, 34)))

WG = f"""[Interface]
Address = 10.200.200.2/32, fd00::2/128 # the subnet should be /32 and /128
PrivateKey = {PRIVATE}
DNS = 10.200.200.1, search.example
MTU = 1380
ListenPort = 51999
PostUp = echo never run

[Peer]
PublicKey = {PEER}
PresharedKey = {PSK}
Endpoint = 127.0.0.1:51820
AllowedIPs = 10.200.200.0/24, fd00::/64
PersistentKeepalive = 25
"""
SERVICES = """
[TCPClientTunnel]
BindAddress = 127.0.0.1:25565
Target = play.example:25565

[tcpclienttunnel]
bindaddress = :2222
target = [fd00::1]:22

[TCPServerTunnel]
ListenPort = 3422
Target = localhost:25545

[STDIOTunnel]
Target = ssh.myserver.example:22

[Socks5]
BindAddress = 127.0.0.1:25344
; a comment in INI's way
Username = me
Password = pass word

[http]
BindAddress = [::1]:25345

[UDPClientTunnel]
BindAddress = 127.0.0.1:5353
Target = 10.200.200.1:53

[UDPServerTunnel]
ListenPort = 5353
Target = 127.0.0.1:53
"""


KNOWN_SECTIONS = ("[Interface], [Peer], [Socks5], [http], [TCPClientTunnel], [TCPServerTunnel], [UDPClientTunnel], "
                  "[UDPServerTunnel], [STDIOTunnel]")


def write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def error_of(text: str, path: str = "proxy.conf") -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, path)
    message = str(caught.value)
    for secret in (PRIVATE, PRIVATE[:20], PSK[:20], "pass word", "hunter2"):
        assert secret not in message
    return message


def test_every_section():
    config = parse(WG + SERVICES, "proxy.conf")
    assert config.net.addresses == ("10.200.200.2", "fd00::2")
    assert config.net.dns == ("10.200.200.1",)
    assert config.net.mtu == 1380
    device = config.net.device
    assert device.private_key == clamp(bytes(range(32))) and device.listen_port == 51999
    [peer] = device.peers
    assert peer.public_key == public_key(clamp(bytes(range(1, 33)))) and peer.preshared_key == bytes(range(2, 34))
    assert str(peer.endpoint.address) == "127.0.0.1" and peer.endpoint.port == 51820
    assert peer.persistent_keepalive_interval == 25 and len(peer.allowed_ips) == 2
    assert config.tcp_client_tunnels == (TcpClientTunnel(HostPort("127.0.0.1", 25565), HostPort("play.example", 25565)),
                                         TcpClientTunnel(HostPort("", 2222), HostPort("fd00::1", 22)))
    assert config.tcp_server_tunnels == (TcpServerTunnel(3422, HostPort("localhost", 25545)),)
    assert config.stdio == StdioTunnel(HostPort("ssh.myserver.example", 22))
    assert config.socks5 == (Socks5(HostPort("127.0.0.1", 25344), ("me", "pass word")),)
    assert config.http == (HttpProxy(HostPort("::1", 25345)),)
    assert config.udp_client_tunnels == (UdpClientTunnel(HostPort("127.0.0.1", 5353), HostPort("10.200.200.1", 53)),)
    assert config.udp_server_tunnels == (UdpServerTunnel(5353, HostPort("127.0.0.1", 53)),)
    assert str(HostPort("fd00::1", 22)) == "[fd00::1]:22" and str(HostPort("a", 1)) == "a:1"


def test_repr_shows_no_key_or_password():
    config = parse(WG + SERVICES, "proxy.conf")
    text = repr(config)
    assert "pass word" not in text and "private_key" not in text and "Socks5(bind=" in text


def test_wg_config_file(tmp_path):
    write(tmp_path, "wg0.conf", WG)
    path = write(tmp_path, "proxy.conf", "# from a wg-quick file\nWGConfig = wg0.conf\n" + SERVICES)
    assert load(path) == parse(WG + SERVICES, "other.conf")
    error = write(tmp_path, "wg1.conf", WG.replace("MTU = 1380", "MTU = big"))
    path = write(tmp_path, "proxy2.conf", f"WGConfig = {error}\n[STDIOTunnel]\nTarget = a:1\n")
    with pytest.raises(ConfigError, match=f"^{error}:5: \\[Interface\\] MTU: not a number: \"big\"$"):
        load(path)


def test_missing_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nothing\.conf: No such file or directory"):
        load(str(tmp_path / "nothing.conf"))
    path = write(tmp_path, "proxy.conf", "WGConfig = a\0b\n[STDIOTunnel]\nTarget = a:1\n")
    with pytest.raises(ConfigError, match=r"b: not a file name \(it holds a NUL\)$"):
        load(path)
    path = write(tmp_path, "proxy.conf", "WGConfig = absent.conf\n[STDIOTunnel]\nTarget = a:1\n")
    with pytest.raises(ConfigError, match=r"absent\.conf: No such file or directory"):
        load(path)


def test_wg_config_and_interface_both():
    assert error_of("WGConfig = wg0.conf\n" + WG + SERVICES) == "proxy.conf:2: [Interface] and WGConfig both given"


def replace(old: str, new: str) -> str:
    text = WG + SERVICES
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(("text", "message"), [
    (replace("BindAddress = 127.0.0.1:25344", "BindAddress = x"),
     'proxy.conf:32: [Socks5] BindAddress: not HOST:PORT: "x"'),
    (replace("BindAddress = 127.0.0.1:25344", "BindAddress = 127.0.0.1:0"),
     'proxy.conf:32: [Socks5] BindAddress: not a port (1-65535): "0"'),
    (replace("BindAddress = [::1]:25345", "BindAddress = [::x]:1"),
     'proxy.conf:38: [http] BindAddress: not an IPv6 address: "::x"'),
    (replace("Target = play.example:25565", "Target = :25565"),
     'proxy.conf:18: [TCPClientTunnel] Target: not HOST:PORT: ":25565"'),
    (replace("ListenPort = 3422", "ListenPort = 70000"),
     'proxy.conf:25: [TCPServerTunnel] ListenPort: not a port (1-65535): "70000"'),
    (replace("Target = localhost:25545\n", ""), "proxy.conf:24: [TCPServerTunnel] Target: missing"),
    (replace("[Socks5]\nBindAddress = 127.0.0.1:25344\n", "[Socks5]\n"),
     "proxy.conf:31: [Socks5] BindAddress: missing"),
    (replace("Username = me", "User = me"),
     'proxy.conf:34: [Socks5]: unknown key; known: BindAddress, Username, Password'),
    (replace("Username = me", "Username = me\nhunter2"), "proxy.conf:35: [Socks5]: not KEY = VALUE"),
    (replace("Username = me", "Username = me\nusername = you"), "proxy.conf:35: [Socks5] Username: given twice"),
    (replace("Username = me\n", ""), "proxy.conf:34: [Socks5] Password: needs Username as well"),
    (replace("Password = pass word", "Password = " + "x" * 256),
     "proxy.conf:35: [Socks5] Password: longer than 255 bytes"),
    (replace("[http]\n", "[http]\nUsername = a:b\nPassword = hunter2\n"),
     "proxy.conf:38: [http] Username: holds a colon, which Basic authentication cannot carry"),
    (replace("[UDPServerTunnel]", "[UDPServerTunnels]"), "proxy.conf:44: unknown section; known: " + KNOWN_SECTIONS),
    (replace("[Peer]", "[Peer"), "proxy.conf:9: unknown section; known: " + KNOWN_SECTIONS),
    (replace("[STDIOTunnel]", "[STDIOTunnel]\nTarget = b:1\n[STDIOTunnel]"),
     "proxy.conf:30: [STDIOTunnel]: only one: there is one standard input"),
    (replace("[Peer]", "[Interface]"), "proxy.conf:9: a second [Interface]"),
    (replace("BindAddress = [::1]:25345", "BindAddress = 127.0.0.1:25565"),
     "proxy.conf:37: [http]: listens where [TCPClientTunnel] of line 16 does"),
    (replace("ListenPort = 5353", "ListenPort = 3422"), None),
    (replace("Target = 127.0.0.1:53", "Target = 127.0.0.1:53\n[UDPServerTunnel]\nListenPort = 5353\nTarget = a:1"),
     "proxy.conf:47: [UDPServerTunnel]: listens where [UDPServerTunnel] of line 44 does"),
    ("Address = 10.0.0.1\n" + WG + SERVICES, "proxy.conf:1: before any section, only WGConfig = PATH"),
    (WG, "proxy.conf: no service: add a [Socks5], [http] or tunnel section"),
    (SERVICES, "proxy.conf: no [Interface] (or WGConfig = PATH to a wg-quick file)"),
    (replace(f"PrivateKey = {PRIVATE}\n", ""), "proxy.conf: [Interface] PrivateKey: missing"),
    (replace("Address = 10.200.200.2/32, fd00::2/128 # the subnet should be /32 and /128\n", ""),
     "proxy.conf: [Interface] Address: missing"),
    (replace("fd00::2/128", "fd00::2/129"),
     "proxy.conf:2: [Interface] Address: not an interface address: 'fd00::2/129'"),
    (replace("DNS = 10.200.200.1", "DNS = 10.200.200.999"),
     'proxy.conf:4: [Interface] DNS: not an IP address: "10.200.200.999"'),
    (replace("MTU = 1380", "MTU = -1"), 'proxy.conf:5: [Interface] MTU: not a number: "-1"'),
    (replace("ListenPort = 51999", "ListenPort = nope"), "proxy.conf:6: [Interface] ListenPort: Servname not supported "
                                                          "for ai_socktype: `nope'"),
    (replace("Endpoint = 127.0.0.1:51820", "Endpoint = 127.0.0.1"),
     "proxy.conf:12: [Peer] Endpoint: Unable to find port of endpoint: `127.0.0.1'"),
    (replace("PersistentKeepalive = 25", "PersistentKeepalive = 70000"),
     "proxy.conf:14: [Peer] PersistentKeepalive: Persistent keepalive interval is neither 0/off nor 1-65535: `70000'"),
    (replace("PostUp = echo never run", "SaveConfig = maybe"),
     "proxy.conf:7: [Interface] SaveConfig: `maybe' is neither true nor false"),
    (replace(f"PublicKey = {PEER}\n", ""), "proxy.conf: A peer is missing a public key"),
    (replace("[Peer]\n", "[Peer]\nColor = blue\n"), "proxy.conf:10: [Peer]: Line unrecognized"),
])
def test_errors_name_file_line_and_field(text, message):
    if message is None:  # not an error: TCP and UDP ports are apart
        parse(text, "proxy.conf")
    else:
        assert error_of(text) == message


@pytest.mark.parametrize(("text", "message"), [
    (replace(f"PrivateKey = {PRIVATE}", f"PrivateKey = {PRIVATE[:-2]}"),
     "proxy.conf:3: [Interface] PrivateKey: Key is not the correct length or format"),
    (replace(f"PrivateKey = {PRIVATE}", f"Private Key = {PRIVATE}x"),
     "proxy.conf:3: [Interface] PrivateKey: Key is not the correct length or format"),
    (replace(f"PresharedKey = {PSK}", f"PresharedKey = {PSK[1:]}"),
     "proxy.conf:11: [Peer] PresharedKey: Key is not the correct length or format"),
    (replace("[Peer]\n", f"[Peer]\nPrivateKey = {PRIVATE}\n"), "proxy.conf:10: [Peer] PrivateKey: Line unrecognized"),
    (replace(f"PrivateKey = {PRIVATE}", PRIVATE), "proxy.conf:3: [Interface]: Line unrecognized"),
    (replace(f"PrivateKey = {PRIVATE}", PRIVATE[:30]), "proxy.conf:3: [Interface]: Line unrecognized"),
    (replace("[Socks5]", f"[Socks5 {PRIVATE}]"), "proxy.conf:31: unknown section; known: " + KNOWN_SECTIONS),
    (replace("Username = me", f"{PRIVATE[:-1]}"), "proxy.conf:34: [Socks5]: not KEY = VALUE"),
    (replace("Username = me", PRIVATE),
     "proxy.conf:34: [Socks5]: unknown key; known: BindAddress, Username, Password"),
])
def test_keys_never_in_messages(text, message):
    assert error_of(text) == message


def test_net_from_config_names_fields_and_hides_keys(tmp_path):
    path = write(tmp_path, "wg0.conf", WG.replace(f"PrivateKey = {PRIVATE}", f"PrivateKey = {PRIVATE[:-3]}"))
    with pytest.raises(ConfigError) as caught:
        Net.from_config(path)
    assert str(caught.value) == "line 2: [Interface] PrivateKey: Key is not the correct length or format"


def test_not_utf8(tmp_path):
    path = tmp_path / "proxy.conf"
    path.write_bytes((WG + SERVICES).replace("Password = pass word", "Password = \xff").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"proxy.conf:35: not UTF-8$"):
        load(str(path))


def test_the_net_it_describes_runs():
    """The NetConfig makes a Net whose device holds the file's keys and peer (no traffic is sent)."""
    net_config: NetConfig = parse(WG.replace("ListenPort = 51999\n", "") + SERVICES, "proxy.conf").net
    with Net(net_config.device, list(net_config.addresses), mtu=net_config.mtu, dns=list(net_config.dns)) as net:
        state = net.uapi(b"get=1\n\n").decode()
    assert f"private_key={clamp(bytes(range(32))).hex()}\n" in state
    assert f"public_key={public_key(clamp(bytes(range(1, 33)))).hex()}\n" in state
    assert "endpoint=127.0.0.1:51820\n" in state and "persistent_keepalive_interval=25\n" in state


def numeric_getaddrinfo(resolve=socket.getaddrinfo):
    def numeric(host, port, family=0, type=0, proto=0, flags=0):
        return resolve(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
    return numeric


LINES = [line + "\n" for line in (WG + SERVICES).split("\n")] + ["[", "=", "WGConfig = /dev/null\n", "#", ";", "\x00"]


@settings(max_examples=300)
@given(st.lists(st.one_of(st.sampled_from(LINES), st.text(max_size=40)), max_size=30))
def test_any_text_raises_only_config_error(lines):
    with mock.patch("socket.getaddrinfo", numeric_getaddrinfo()), \
            mock.patch.dict(os.environ, {"WG_ENDPOINT_RESOLUTION_RETRIES": "0"}):
        try:
            parse("".join(lines), "fuzz.conf")
        except ConfigError as error:
            assert str(error).startswith("fuzz.conf") or str(error).startswith("/dev/null")
            assert PRIVATE not in str(error) and PRIVATE[:20] not in str(error)


def test_an_endpoint_by_name_gets_its_name_on_the_peer():
    """Endpoint = NAME:PORT: the device knows the name, to look it up again (wgc.reresolve)."""
    text = WG.replace("ListenPort = 51999\n", "").replace("Endpoint = 127.0.0.1:51820", "Endpoint = localhost:51820")
    net_config: NetConfig = parse(text + SERVICES, "proxy.conf").net
    with Net(net_config.device, list(net_config.addresses), mtu=net_config.mtu, dns=list(net_config.dns)) as net:
        (peer,) = net.device.peers()
        assert peer.endpoint_name == ("localhost", 51820)
        assert peer.endpoint in (("127.0.0.1", 51820), ("::1", 51820))
        assert net.device.reresolver.deadline() is not None
