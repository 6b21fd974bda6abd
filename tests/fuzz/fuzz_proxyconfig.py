"""wgc --proxy's configuration (wgc/proxy/config.py parse).

Invariants: a file is refused only with ConfigError, whose message starts
with the file's name (or the WGConfig file's) and quotes no key or password
(each in turn is replaced by a mark, which the message must not show); a
file taken yields a Net configuration with a private
key and at least one address, and at least one service.  Endpoints are
resolved numerically only (common.numeric_resolver).
"""
import os
import re
import tempfile

import common

with common.instrumented():
    from wgc.control.model import ZERO_KEY
    from wgc.netstack.net import ConfigError
    from wgc.proxy.config import parse

common.numeric_resolver()
os.environ["WG_ENDPOINT_RESOLUTION_RETRIES"] = "0"
SECRET_VALUE = re.compile(r"(?im)^\s*(?:private\s*key|preshared\s*key|password)\s*=\s*([^#\s]{8,})")
MARK = "QQQQQQQQ"
WG_CONFIG = re.compile(r"(?im)^\s*wgconfig\s*=([^#\n]*)")
# A relative WGConfig is looked for in an empty directory of this run's own,
# and an absolute one other than /dev/null is skipped, so that no input reads
# a device (/dev/stdin) or another file.
EMPTY = tempfile.TemporaryDirectory(prefix="wgc-fuzz-proxyconfig-")
os.chdir(EMPTY.name)


def message(text: str) -> str | None:
    """parse's error for text (None if it takes it), after the checks every outcome gets."""
    wg_configs = tuple(value.strip() for value in WG_CONFIG.findall(text))
    try:
        config = parse(text, "fuzz.conf")
    except ConfigError as error:
        assert str(error).startswith(("fuzz.conf:", "fuzz.conf: ", *(f"{v}:" for v in wg_configs))), str(error)
        return str(error)
    assert config.net.device.private_key not in (None, ZERO_KEY) and config.net.addresses
    assert (config.socks5 or config.http or config.tcp_client_tunnels or config.tcp_server_tunnels
            or config.udp_client_tunnels or config.udp_server_tunnels or config.stdio)
    return None


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    if any("/" in value.strip() and value.strip() != "/dev/null" for value in WG_CONFIG.findall(text)):
        return
    if message(text) is None or MARK in text:
        return
    # Each key or password in turn replaced, on its line only, by a mark that
    # nothing else makes: an error quoting the value would show the mark.
    for secret in SECRET_VALUE.finditer(text):
        start, end = secret.span(1)
        marked = message(text[:start] + "Q" * (end - start) + text[end:])
        assert marked is None or MARK not in marked, marked


def seeds() -> list[bytes]:
    """wireproxy's sample configuration with each kind of section, and the UDP ones."""
    from wgc._crypto import clamp, public_key
    from wgc.control.model import key_to_base64

    private = key_to_base64(clamp(bytes(range(32))))
    peer = key_to_base64(public_key(clamp(bytes(range(1, 33)))))
    wg = (f"[Interface]\nAddress = 10.200.200.2/32 # comment\nPrivateKey = {private}\nDNS = 10.200.200.1\n"
          f"MTU = 1420\n\n[Peer]\nPublicKey = {peer}\nEndpoint = 127.0.0.1:51820\nPersistentKeepalive = 25\n\n")
    return [
        (wg + "[TCPClientTunnel]\nBindAddress = 127.0.0.1:25565\nTarget = play.example:25565\n\n"
         "[TCPServerTunnel]\nListenPort = 3422\nTarget = localhost:25545\n\n[STDIOTunnel]\nTarget = ssh.example:22\n\n"
         "[Socks5]\nBindAddress = 127.0.0.1:25344\nUsername = me\nPassword = secret\n\n"
         "[http]\nBindAddress = [::1]:25345\n").encode(),
        (wg + "[UDPClientTunnel]\nBindAddress = :5353\nTarget = 10.200.200.1:53\n"
         "[udpservertunnel]\nlistenport = 53\ntarget = 127.0.0.1:53\n").encode(),
        b"WGConfig = /dev/null\n[Socks5]\nBindAddress = 127.0.0.1:1080\n",
    ]


if __name__ == "__main__":
    common.main(one_input)
