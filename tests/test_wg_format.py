"""The built-in wg's text for states the namespace tests cannot reach cheaply:
counters in KiB to TiB, handshakes years ago or in the future, keepalives of
hours, peers sorted by handshake.  Expected text written out by hand from
wg(8)'s formats ("%.2f KiB", "1 hour, 2 minutes", ...)."""
import base64
import io
import ipaddress
import time

from wgc.control.model import AllowedIP, Device, Endpoint, Peer
from wgc.control.wgtool import Tool, pretty_time, size, sort_by_handshake, strip_ansi


def test_sizes():
    assert strip_ansi(size(0)) == "0 B"
    assert strip_ansi(size(1023)) == "1023 B"
    assert strip_ansi(size(1024)) == "1.00 KiB"
    assert strip_ansi(size(1535)) == "1.50 KiB"  # 1.4990234375 rounds up
    assert strip_ansi(size(1024 ** 2 - 1)) == "1024.00 KiB"
    assert strip_ansi(size(5 * 1024 ** 3 + 1)) == "5.00 GiB"
    assert strip_ansi(size(3 * 1024 ** 4)) == "3.00 TiB"
    assert strip_ansi(size(2 ** 64 - 1)) == "16777216.00 TiB"
    assert size(5) == "5 \x1b[36mB\x1b[0m"


def test_pretty_time():
    assert strip_ansi(pretty_time(1)) == "1 second"
    assert strip_ansi(pretty_time(61)) == "1 minute, 1 second"
    assert strip_ansi(pretty_time(65535)) == "18 hours, 12 minutes, 15 seconds"
    assert strip_ansi(pretty_time(365 * 86400 + 2 * 86400)) == "1 year, 2 days"
    assert strip_ansi(pretty_time(3 * 365 * 86400 + 3600)) == "3 years, 1 hour"
    assert pretty_time(0) == ""


def test_strip_ansi_like_wg():
    assert strip_ansi("\x1b[1mbold\x1b[0m: x") == "bold: x"
    assert strip_ansi("a\x1b[12;34mb") == "ab"
    assert strip_ansi("end\x1b[") == "end\x1b["  # ESC [ in the last two characters stays
    assert strip_ansi("\x1b[999") == ""  # no letter: everything after ESC [ goes


def test_sort_by_handshake_is_stable_and_puts_never_last():
    peers = [Peer(public_key=bytes([n]) * 32, last_handshake_time_sec=sec, last_handshake_time_nsec=nsec)
             for n, (sec, nsec) in enumerate([(0, 0), (100, 5), (200, 0), (0, 0), (100, 9), (0, 1)])]
    assert [p.public_key[0] for p in sort_by_handshake(peers)] == [2, 4, 1, 5, 0, 3]


def test_pretty_text(monkeypatch):
    monkeypatch.delenv("WG_HIDE_KEYS", raising=False)
    monkeypatch.setenv("WG_COLOR_MODE", "never")
    now = int(time.time())
    device = Device(name="wg7", kind="kernel", private_key=b"\x01" * 32, public_key=b"\x02" * 32, listen_port=7,
                    fwmark=0xABC, peers=[
                        Peer(public_key=b"\x03" * 32, allowed_ips=[], rx_bytes=0, tx_bytes=2048),
                        Peer(public_key=b"\x04" * 32, preshared_key=b"\x05" * 32,
                             endpoint=Endpoint(ipaddress.ip_address("::ffff:1.2.3.4"), 9),
                             allowed_ips=[AllowedIP.parse("::1.2.3.0/120"), AllowedIP.parse("0.0.0.0/0")],
                             last_handshake_time_sec=now - 3 * 86400 - 1, rx_bytes=3 * 1024 ** 2,
                             persistent_keepalive_interval=3600),
                        Peer(public_key=b"\x06" * 32, last_handshake_time_sec=now + 3600),
                    ])
    out = io.BytesIO()
    Tool("wg", stdout=out).pretty(device)
    b64 = {n: base64.b64encode(bytes([n]) * 32).decode() for n in range(1, 7)}
    assert out.getvalue().decode() == (
        "interface: wg7\n"
        f"  public key: {b64[2]}\n"
        "  private key: (hidden)\n"
        "  listening port: 7\n"
        "  fwmark: 0xabc\n"
        "\n"
        f"peer: {b64[6]}\n"
        "  allowed ips: (none)\n"
        "  latest handshake: (System clock wound backward; connection problems may ensue.)\n"
        "\n"
        f"peer: {b64[4]}\n"
        "  preshared key: (hidden)\n"
        "  endpoint: [::ffff:1.2.3.4]:9\n"
        "  allowed ips: ::1.2.3.0/120, 0.0.0.0/0\n"
        "  latest handshake: 3 days, 1 second ago\n"
        "  transfer: 3.00 MiB received, 0 B sent\n"
        "  persistent keepalive: every 1 hour\n"
        "\n"
        f"peer: {b64[3]}\n"
        "  allowed ips: (none)\n"
        "  transfer: 0 B received, 2.00 KiB sent\n"
    )
