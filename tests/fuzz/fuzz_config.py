"""Configuration files: wg-quick's reading (wgc/control/wgquick.py parse_text)
and then wg setconf's (wgc/control/config.py ConfigFile) of what it keeps.

Invariants: wg-quick refuses a file only with Failure; what it keeps for
wg (`wg-quick strip`) holds none of its own keys any more, so reading that
again keeps it unchanged; wg's reader never raises, and either refuses with
one message per line ending in a newline, or yields a configuration that the
model accepts and that the daemon takes whole when wg sends it
(userspace.build_set into uapi.handle_set: errno 0).  Endpoints are resolved
numerically only (common.numeric_resolver).
"""
import logging
import os

import common

with common.instrumented():
    from wgc import uapi
    from wgc.control import userspace
    from wgc.control.config import ConfigFile, Parser, read_config_lines
    from wgc.control.wgquick import Config, Failure, parse_text
    from wgc.device import Device

common.numeric_resolver()
os.environ["WG_ENDPOINT_RESOLUTION_RETRIES"] = "0"
LOG = logging.getLogger("wgc.fuzz")
LOG.propagate = False
logging.getLogger("wgc").propagate = False


def wg_quick(text: str) -> Config | None:
    config = Config()
    try:
        parse_text(config, text)
    except Failure as failure:
        assert str(failure)
        return None
    again = Config()
    parse_text(again, config.wg_config)
    assert again.wg_config == config.wg_config
    assert not (again.addresses or again.dns or again.dns_search or again.mtu or again.table
                or again.pre_up or again.post_up or again.pre_down or again.post_down or again.save_config)
    return config


def setconf(data: bytes):
    messages = []
    reader = ConfigFile(Parser(messages.append), append=False)
    ok = all(reader.read_line(line) for line in read_config_lines(data))
    draft = reader.finish() if ok else None
    assert all(m.endswith("\n") and "\n" not in m[:-1] for m in messages), messages
    if draft is None:
        assert messages and not messages[-1].startswith("Warning"), messages
        return None
    assert all(m.startswith("Warning: AllowedIP has nonzero host part") for m in messages), messages
    return draft.to_config()


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    config = wg_quick(text)
    if config is None:
        return
    device_config = setconf(config.wg_config.encode("utf-8", "surrogateescape"))
    if device_config is None:
        return
    request = userspace.build_set(device_config, replace_peers=True)
    operation, _, body = request.partition(b"\n")
    assert operation == b"set=1"
    device = Device("fuzz", None, LOG)
    try:
        assert uapi.handle_set(device, body) == 0, request
    finally:
        device.close()


def seeds() -> list[bytes]:
    """A wg-quick file of each kind of line, as wg-quick(8)'s examples write them."""
    from wgc._crypto import clamp, public_key
    from wgc.control.model import key_to_base64

    private = clamp(bytes(range(32)))
    peer = key_to_base64(public_key(clamp(bytes(range(1, 33)))))
    psk = key_to_base64(bytes(range(32)))
    return [
        f"[Interface]\nAddress = 10.200.100.8/24, fd00::8/64\nDNS = 10.200.100.1, example.org\nMTU = 1420\n"
        f"Table = off\nPostUp = echo up\nPreDown = echo down\nSaveConfig = true\n"
        f"PrivateKey = {key_to_base64(private)}\nListenPort = 51820\nFwMark = 0x1234\n\n"
        f"[Peer]\nPublicKey = {peer}\nPresharedKey = {psk}\nAllowedIPs = 10.200.100.0/24, ::/0\n"
        f"Endpoint = [2001:db8::1]:51820\nPersistentKeepalive = 25\n".encode(),
        f"[interface]\nprivatekey={key_to_base64(private)}  # comment\n[peer]\npublickey={peer}\n"
        f"allowedips=192.168.0.1\nendpoint=127.0.0.1:5\r\n".encode(),
    ]


if __name__ == "__main__":
    common.main(one_input)
