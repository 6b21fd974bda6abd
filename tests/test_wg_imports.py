"""What the built-in wg imports for the commands monitoring scripts run every
few seconds on a router: reading a userspace device's answer, printing it
(`show`, `show all dump`, `showconf`) and reading `wg set` arguments for a
change.  Each module named here once made the one-directory `wgc --wg show`
cost several times a bare Python (`just bench-binary` measures it; this only
holds the imports, in a fresh interpreter, never a time).
"""
import base64
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

# The standard library's modules the commands do without (and most of what they import).
NOT_NEEDED = {"dataclasses", "inspect", "re", "enum", "typing", "ipaddress", "socket", "selectors", "signal",
              "logging", "threading", "contextlib", "base64", "collections", "functools", "wgc.netlink",
              "wgc.control.kernel", "wgc.reresolve", "wgc.counters"}

PEER = "11" * 32
PEER_BASE64 = base64.b64encode(bytes.fromhex(PEER)).decode()
ANSWER = (f"listen_port=51820\nfwmark=7\npublic_key={PEER}\npreshared_key={'22' * 32}\n"
          "endpoint=[fd00::1]:51820\nallowed_ip=10.0.0.2/32\nallowed_ip=fd00::2/128\n"
          "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\nrx_bytes=1000\ntx_bytes=2000\n"
          f"persistent_keepalive_interval=25\nprotocol_version=1\npublic_key={'33' * 32}\n"
          "endpoint=192.0.2.1:51820\nallowed_ip=10.0.0.3/32\nerrno=0\n\n")

SCRIPT = f"""
import io, sys
sys.path.insert(0, {str(ROOT)!r})
before = set(sys.modules)
from wgc.control import userspace
from wgc.control.config import Parser
from wgc.control.wgtool import Tool

out = io.BytesIO()
tool = Tool("wg", stdout=out, stderr=out)
device = userspace.parse_get("wg0", {ANSWER.encode()!r})
tool.pretty(device)
tool.show_field(device, "dump", True, "show")
lines = [f"{{peer.endpoint}} {{peer.allowed_ips[0]}}" for peer in device.peers]
draft = Parser(print).command_line(["listen-port", "51820", "fwmark", "0x7", "peer", {PEER_BASE64!r}, "endpoint",
                                    "192.0.2.1:51820", "allowed-ips", "10.0.0.2/32,fd00::2/128",
                                    "persistent-keepalive", "25", "peer", {PEER_BASE64!r}, "endpoint", "[fd00::1]:1"])
request = userspace.build_set(draft.to_config(), replace_peers=False)
assert b"wg0" in out.getvalue() and b"[fd00::1]:51820" in out.getvalue() and b"endpoint=192.0.2.1:51820" in request
print(" ".join(sorted(set(sys.modules) - before)))
"""


def test_show_and_set_import_nothing_they_do_without():
    done = subprocess.run([sys.executable, "-I", "-S", "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    imported = set(done.stdout.split())
    assert "wgc.control.wgtool" in imported
    assert imported & NOT_NEEDED == set()
