"""Reading and configuring WireGuard devices, userspace or kernel, from Python.

    from wgc import control

    control.device_names()                 # ["wg0", ...]: kernel links, then UAPI sockets
    dev = control.device("wg0")            # a Device with its peers and allowed IPs
    control.counters("wg0").values         # a wgc daemon's drop and event counters
    control.configure("wg0", control.DeviceConfig(
        listen_port=51820,
        peers=[control.PeerConfig(public_key=control.key_from_base64("..."),
                                  allowed_ips=[control.AllowedIP.parse("10.0.0.2/32")])]))

A name with a live socket /var/run/wireguard/NAME.sock is a userspace device
(wgc, wireguard-go) spoken to with the UAPI text protocol; any other name is
looked up in the kernel through generic netlink, as wg(8) does.  Failures
raise WireGuardError, an OSError whose errno says why.

The kernel backend (generic netlink) is imported only when a name is not a
userspace device: `wg show` against wgc or wireguard-go never pays for it.
"""
from __future__ import annotations

import errno

from wgc.control import userspace
from wgc.control.model import (
    KEY_LEN,
    ZERO_KEY,
    AllowedIP,
    Device,
    DeviceConfig,
    DeviceCounters,
    Endpoint,
    Peer,
    PeerConfig,
    key_from_base64,
    key_from_hex,
    key_to_base64,
    key_to_hex,
)
from wgc.errors import WireGuardError

__all__ = [
    "KEY_LEN",
    "ZERO_KEY",
    "AllowedIP",
    "Device",
    "DeviceConfig",
    "DeviceCounters",
    "Endpoint",
    "Peer",
    "PeerConfig",
    "WireGuardError",
    "configure",
    "counters",
    "device",
    "device_names",
    "devices",
    "is_userspace",
    "key_from_base64",
    "key_from_hex",
    "key_to_base64",
    "key_to_hex",
]


def device_names() -> list[str]:
    """Every WireGuard device: kernel links of kind wireguard first, then the
    live UAPI sockets in /var/run/wireguard and $XDG_RUNTIME_DIR/wireguard
    (stale ones are removed)."""
    from wgc.control import kernel

    return kernel.device_names() + userspace.device_names()


def is_userspace(name: str) -> bool:
    return userspace.has_device(name)


def device(name: str) -> Device:
    """The current state of one device."""
    if userspace.has_device(name):
        return userspace.get_device(name)
    from wgc.control import kernel

    return kernel.get_device(name)


def counters(name: str) -> DeviceCounters:
    """What a wgc daemon counts of its device: drops by reason, handshakes,
    their round-trip time (wgc/counters.py explains each figure).  Other
    devices count none of it: EOPNOTSUPP for a kernel device or another
    userspace daemon, ENODEV (from the kernel) for no device at all."""
    if userspace.has_device(name):
        return userspace.get_counters(name)
    from wgc.control import kernel

    kernel.get_device(name)
    raise WireGuardError(errno.EOPNOTSUPP, f"{name} does not report counters: a kernel device, not a wgc daemon")


def devices() -> list[Device]:
    """The state of every device; one that disappears while being read is left out."""
    found = []
    for name in device_names():
        try:
            found.append(device(name))
        except WireGuardError:
            continue
    return found


def configure(name: str, config: DeviceConfig, replace_peers: bool = False) -> None:
    """Applies config to the device.  With replace_peers, peers not in config
    are removed first.  Neither backend is transactional: after a failure,
    what came before the refused part stays applied."""
    if userspace.has_device(name):
        userspace.set_device(name, config, replace_peers)
    else:
        from wgc.control import kernel

        kernel.set_device(name, config, replace_peers)
