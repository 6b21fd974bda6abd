"""Where a userspace WireGuard device's control socket lives: the place that
wireguard-go, wg(8) and wgc agree on, /var/run/wireguard/NAME.sock; and, for
an interface run by an unprivileged user (wgc --proxy), that user's runtime
directory, $XDG_RUNTIME_DIR/wireguard, where wgc's own wg looks as well."""
import os

SOCKET_DIRECTORY = "/var/run/wireguard"
SOCKET_SUFFIX = ".sock"
# linux/if.h: an interface name is at most 15 bytes and a NUL.  (Here, beside the
# sockets named after interfaces, and not in wgc.netlink: wg(8) cuts names to it,
# and the built-in wg would otherwise import the netlink machinery to know.)
IFNAMSIZ = 16


def socket_path(name: str) -> str:
    return os.path.join(SOCKET_DIRECTORY, name + SOCKET_SUFFIX)


def user_socket_directory() -> str | None:
    """$XDG_RUNTIME_DIR/wireguard (None without XDG_RUNTIME_DIR, or when it is
    not an absolute path)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(runtime):
        return None
    return os.path.join(runtime, "wireguard")


def socket_directories() -> list[str]:
    """Where sockets are looked for, in order: the shared directory, then the user's."""
    user = user_socket_directory()
    return [SOCKET_DIRECTORY] + ([user] if user and os.path.normpath(user) != SOCKET_DIRECTORY else [])


def socket_paths(name: str) -> list[str]:
    """Where NAME's socket may be, in the order of socket_directories()."""
    return [os.path.join(directory, name + SOCKET_SUFFIX) for directory in socket_directories()]
