"""A place to run `wgc --proxy` as its users do, for tests and benchmarks.

Near: namespace `near`, where the proxy runs with no capabilities (bounding
set empty, no new privileges) and /dev/net/tun hidden behind an empty
tmpfs, as user nobody when wgc is the frozen executable (WGC_COMMAND, in
the binary tier), else as root without capabilities: the package's
interpreter lives under /root, which nobody may not enter.  The clients
(curl, ssh-style commands, Python) connect to it there, on loopback.  Far: namespace `far`, a WireGuard daemon
with a TUN (wgc, or Debian's wireguard-go) at FAR4/FAR6, with the kernel's
sockets behind it.  The two namespaces share a veth cable; the proxy's only
traffic on it is WireGuard's UDP.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap

from netns import unique_name, veth, wait_for
from wgc.paths import SOCKET_DIRECTORY
from wgnet import WGC, new_key, start_daemon

NEAR4, FAR4 = "10.9.0.2", "10.9.0.1"
NEAR6, FAR6 = "fd00:9::2", "fd00:9::1"
WG_PORT = 51820
USER = pwd.getpwnam("nobody") if len(WGC) == 1 else pwd.getpwuid(0)
UNPRIVILEGED = ("setpriv", f"--reuid={USER.pw_uid}", f"--regid={USER.pw_gid}", "--clear-groups",
                "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs")


class Site:
    def __init__(self, netns, implementation: str = "wgc", *, far_dns: bool = False):
        self.near, self.far = netns("wgpn"), netns("wgpf")
        cable_near, cable_far = veth(self.near, self.far)
        self.near.run("ip", "addr", "add", "192.168.77.2/24", "dev", cable_near)
        self.far.run("ip", "addr", "add", "192.168.77.1/24", "dev", cable_far)
        self.iface = unique_name("wgp")
        self.name = unique_name("wgpx")         # the proxy's interface
        far_key, self.far_public = new_key()
        self.near_key, near_public = new_key()
        start_daemon(self.far, implementation, self.iface)
        self.far.run("wg", "set", self.iface, "private-key", "/dev/stdin", "listen-port", str(WG_PORT),
                     "peer", near_public, "allowed-ips", f"{NEAR4}/32,{NEAR6}/128", input=far_key + "\n")
        self.far.run("ip", "addr", "add", f"{FAR4}/24", "dev", self.iface)
        self.far.run("ip", "-6", "addr", "add", f"{FAR6}/64", "dev", self.iface, "nodad")
        self.far.run("ip", "link", "set", self.iface, "up")
        # The proxy's files: a directory its user may read, a runtime directory of its own.
        self.home = tempfile.mkdtemp(prefix="wgc-proxy-")
        os.chmod(self.home, 0o755)
        self.runtime = os.path.join(self.home, "run")
        os.mkdir(self.runtime, 0o700)
        os.chown(self.runtime, USER.pw_uid, USER.pw_gid)
        self.proxies: list[subprocess.Popen] = []

    def interface_section(self, dns: str | None = None) -> str:
        return textwrap.dedent(f"""\
            [Interface]
            PrivateKey = {self.near_key}
            Address = {NEAR4}/32, {NEAR6}/128
            {f"DNS = {dns}" if dns else ""}

            [Peer]
            PublicKey = {self.far_public}
            Endpoint = 192.168.77.1:{WG_PORT}
            AllowedIPs = 10.9.0.0/24, fd00:9::/64
            PersistentKeepalive = 25
            """)

    def write_config(self, text: str) -> str:
        """A configuration file only the proxy's user may read, named after
        the interface (unique: a proxy run by root has its control socket in
        the shared /var/run/wireguard)."""
        path = os.path.join(self.home, self.name + ".conf")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        os.chown(path, USER.pw_uid, USER.pw_gid)
        return path

    def control_socket(self) -> str:
        directory = os.path.join(self.runtime, "wireguard") if USER.pw_uid else SOCKET_DIRECTORY
        return os.path.join(directory, self.name + ".sock")

    def proxy_command(self, config: str, *extra: str) -> list[str]:
        """`wgc --proxy CONFIG` with no capabilities and no /dev/net/tun (run inside near)."""
        inner = [*UNPRIVILEGED, "env", f"XDG_RUNTIME_DIR={self.runtime}", f"HOME={self.home}", *WGC,
                 "--proxy", config, *extra]
        return ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs tmpfs /dev/net && exec "$@"', "sh", *inner]

    def start(self, sections: str, listening: list[tuple[str, int]], *, dns: str | None = None,
              env: dict | None = None) -> subprocess.Popen:
        """Starts a proxy with these service sections and waits until each of
        `listening` (host, port in near) accepts connections."""
        config = self.write_config(self.interface_section(dns) + "\n" + sections)
        proxy = self.near.popen(*self.proxy_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=dict(os.environ, **(env or {})))
        self.proxies.append(proxy)
        for host, port in listening:
            wait_for(lambda h=host, p=port: proxy.poll() is not None or self._accepts(h, p), timeout=30,
                     what=f"the proxy listening on {host}:{port}")
            if proxy.poll() is not None:
                raise AssertionError(f"the proxy exited {proxy.returncode}: {proxy.stderr.read()}")
        return proxy

    def _accepts(self, host: str, port: int) -> bool:
        probe = self.near.run(sys.executable, "-c", textwrap.dedent("""
            import socket, sys
            try:
                socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
            except OSError:
                sys.exit(1)
            """), host, str(port), check=False)
        return probe.returncode == 0

    def far_python(self, code: str, *args: str) -> subprocess.Popen:
        return self.far.popen(sys.executable, "-c", textwrap.dedent(code), *args,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def near_python(self, code: str, *args: str, **kw) -> subprocess.Popen:
        return self.near.popen(sys.executable, "-c", textwrap.dedent(code), *args,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

    def close(self) -> None:
        for proxy in self.proxies:
            if proxy.poll() is None:
                proxy.terminate()
                try:
                    proxy.wait(10)
                except subprocess.TimeoutExpired:
                    proxy.kill()
                    proxy.wait()
        shutil.rmtree(self.home, ignore_errors=True)

