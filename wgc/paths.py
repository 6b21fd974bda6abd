"""Where a userspace WireGuard device's control socket lives: the place that
wireguard-go, wg(8) and wgc agree on, /var/run/wireguard/NAME.sock."""
import os

SOCKET_DIRECTORY = "/var/run/wireguard"
SOCKET_SUFFIX = ".sock"


def socket_path(name: str) -> str:
    return os.path.join(SOCKET_DIRECTORY, name + SOCKET_SUFFIX)
