"""WireGuard tunnels between two network namespaces, for interop tests and benchmarks.

Each end runs one implementation (wgc, or Debian's wireguard-go) and is
configured only with wg(8), as a user would.  All traffic stays on a veth
cable between the two namespaces.
"""
import base64
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from netns import Netns, socket_path, unique_name, veth, wait_for
from wgc._crypto import clamp, public_key, random


def wgc_command() -> list[str]:
    """The wgc under test: WGC_COMMAND (such as the frozen dist/wgc) or this Python's package.

    A relative path is made absolute, so tests may start it from any directory.
    """
    named = os.environ.get("WGC_COMMAND")
    if not named:
        return [sys.executable, "-m", "wgc"]
    return [os.path.abspath(named) if os.sep in named else named]


WGC = wgc_command()


def wgc_executable() -> str:
    """One path that runs the wgc under test, as users (and wg-quick) start it."""
    return WGC[0] if len(WGC) == 1 else os.path.join(os.path.dirname(sys.executable), "wgc")


IMPLEMENTATIONS = {
    "wgc": WGC,
    "wireguard-go": ["wireguard-go"],
}


def have(implementation: str) -> bool:
    return shutil.which(IMPLEMENTATIONS[implementation][0]) is not None


def new_key() -> tuple[str, str]:
    """(private, public) in wg(8)'s base64."""
    private = clamp(random(32))
    return base64.b64encode(private).decode(), base64.b64encode(public_key(private)).decode()


@dataclass
class End:
    ns: Netns
    implementation: str
    iface: str
    private_key: str
    public_key: str
    outer: str          # this end's address on the cable
    inner4: str
    inner6: str
    port: int
    env: dict = field(default_factory=dict)

    def wg(self, *args, check=True, **kw):
        return self.ns.run("wg", *args, check=check, **kw)

    def set_private_key(self, key: str):
        self.wg("set", self.iface, "private-key", "/dev/stdin", input=key + "\n")

    def show(self, what: str) -> str:
        return self.wg("show", self.iface, what).stdout

    def transfer(self) -> tuple[int, int]:
        """(rx, tx) bytes of the one peer, from `wg show IFACE transfer`."""
        _, rx, tx = self.show("transfer").split()
        return int(rx), int(tx)

    def ping(self, address: str, count: int = 3, interval: float = 0.2, check=True):
        return self.ns.run("ping", "-c", str(count), "-i", str(interval), "-W", "2", address,
                           check=check, timeout=count * interval + 15)


def read_uapi_reply(sock) -> bytes:
    """One UAPI reply from sock: everything up to its blank line (b"" if the daemon closed first)."""
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def start_daemon(ns: Netns, implementation: str, iface: str, env: dict | None = None, wrapper: tuple = ()):
    """Starts the daemon (it daemonizes itself) and waits for its socket to answer;
    wrapper is a command to start it under (such as setpriv dropping a capability)."""
    full_env = dict(os.environ, **(env or {}))
    ns.owns_interface(iface)
    # The daemon keeps our stdout: give it a file, not a pipe we would wait on.
    with open(daemon_log(iface), "w") as log:
        ns.run(*wrapper, *IMPLEMENTATIONS[implementation], iface, env=full_env, timeout=20,
               capture_output=False, stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: os.path.exists(socket_path(iface)), what=f"{implementation} socket for {iface}")


def daemon_log(iface: str) -> str:
    """Where the daemon of iface writes its log (with LOG_LEVEL set)."""
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), f"{iface}.log")


def outer_address(family: int, side: int, subnet: int) -> str:
    return f"192.168.{subnet}.{side}" if family == 4 else f"fd00:{subnet:x}::{side}"


def tunnel(netns_factory, left: str, right: str, outer_family: int = 4, with_ipv6: bool = True,
           env: dict | None = None) -> tuple[End, End]:
    """Two namespaces joined by a veth, a WireGuard tunnel between them, not yet used.

    Inside the tunnel the ends are 10.77.0.1/2 and fd77::1/2; outside they
    talk over IPv4 or IPv6 (outer_family).
    """
    ns_left, ns_right = netns_factory("wgl"), netns_factory("wgr")
    cable_left, cable_right = veth(ns_left, ns_right)
    subnet = 1 + os.getpid() % 250
    ends = []
    for side, (ns, cable, implementation) in enumerate(
            ((ns_left, cable_left, left), (ns_right, cable_right, right)), start=1):
        outer = outer_address(outer_family, side, subnet)
        prefix = 24 if outer_family == 4 else 64
        ns.run("ip", "addr", "add", f"{outer}/{prefix}", "dev", cable, "nodad")
        private, public = new_key()
        iface = unique_name("wgt")
        start_daemon(ns, implementation, iface, env)
        ends.append(End(ns, implementation, iface, private, public, outer,
                        f"10.77.0.{side}", f"fd77::{side}", 51820 + side, env or {}))
    for end, other in ((ends[0], ends[1]), (ends[1], ends[0])):
        endpoint = other.outer if outer_family == 4 else f"[{other.outer}]"
        allowed = f"{other.inner4}/32" + (f",{other.inner6}/128" if with_ipv6 else "")
        end.wg("set", end.iface, "private-key", "/dev/stdin", "listen-port", str(end.port),
               "peer", other.public_key, "endpoint", f"{endpoint}:{other.port}",
               "allowed-ips", allowed, input=end.private_key + "\n")
        end.ns.run("ip", "addr", "add", f"{end.inner4}/24", "dev", end.iface)
        if with_ipv6:
            end.ns.run("ip", "-6", "addr", "add", f"{end.inner6}/64", "dev", end.iface, "nodad")
        end.ns.run("ip", "link", "set", end.iface, "up")
    return ends[0], ends[1]


def rss_kib(pids) -> int:
    """Resident memory of the processes pids (read their list once, before any
    other process starts in the namespace: a process that ends while its
    status is read has no RSS left to give)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
    return total


def daemon_gone(end: End) -> bool:
    return not os.path.exists(socket_path(end.iface))


def iperf3(client: End, server: End, seconds: float = 2, extra=(), ipv6: bool = False,
           amount: str | None = None) -> subprocess.CompletedProcess:
    """A short iperf3 run from client to server through the tunnel (JSON output): for
    seconds, or until amount (iperf3 -n, such as "16M") has gone, within seconds + 30."""
    address = server.inner6 if ipv6 else server.inner4
    srv = server.ns.popen("iperf3", "-s", "-1", "-B", address,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "LISTEN" in server.ns.run("ss", "-ltn", check=False).stdout
                 and ":5201" in server.ns.run("ss", "-ltn", check=False).stdout,
                 what="iperf3 server")
        end = ("-n", amount) if amount else ("-t", str(seconds))
        return client.ns.run("iperf3", "-c", address, *end, "-J", *extra,
                             timeout=seconds + 30)
    finally:
        srv.kill()
        srv.wait()
