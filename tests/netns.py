"""Network namespaces for tests: hosts that exist only for one test.

Every name is unique per process and per call, because /var/run/wireguard is
shared by all namespaces and interface names are limited to 15 characters.
Everything made here is removed by close(), which also kills whatever still
runs inside the namespace, so a failing test leaves nothing behind.
"""
import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time

from wgc.paths import socket_path

_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    return digits[n] if n < 36 else base36(n // 36) + digits[n % 36]


def unique_name(prefix: str) -> str:
    """A name no other test in any process is using: prefix + pid + counter.

    In base 36, so a prefix of up to 6 characters fits an interface name (15)
    whatever the pid (at most 5 digits) and for the first 46,656 names.
    """
    name = f"{prefix}{base36(os.getpid())}x{base36(next(_counter))}"
    assert len(name) <= 15, name
    return name


def have_root() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/net/tun") and shutil.which("ip") is not None


class Netns:
    """One network namespace with loopback up."""

    def __init__(self, prefix: str = "wgcns"):
        self.name = unique_name(prefix)
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self._popens: list[subprocess.Popen] = []
        self._sockets: list[str] = []
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *cmd, check=True, timeout=30, **kw) -> subprocess.CompletedProcess:
        """Runs cmd inside the namespace and waits for it; text output is captured."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        proc = subprocess.run(["ip", "netns", "exec", self.name, *cmd], timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
        return proc

    def popen(self, *cmd, **kw) -> subprocess.Popen:
        """Starts cmd inside the namespace; close() kills it if it still runs."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)
        self._popens.append(proc)
        return proc

    def owns_interface(self, iface: str) -> None:
        """close() removes iface's control socket if its daemon could not."""
        self._sockets.append(socket_path(iface))

    def inside(self, function, *args):
        """Calls function(*args) on a thread that has entered the namespace, and returns
        its result.  A socket it creates belongs to the namespace for good and can then
        be used from any thread, so the test process itself talks inside the namespace."""
        outcome: list = []

        def enter_and_call():
            try:
                with open(f"/var/run/netns/{self.name}") as handle:
                    if _libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into {self.name}")
                outcome.append((True, function(*args)))
            except BaseException as error:
                outcome.append((False, error))

        thread = threading.Thread(target=enter_and_call)
        thread.start()
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def close(self):
        # Daemons first get the chance to clean up (unlink their sockets);
        # what is still running after 2 s is killed.
        for sig, patience in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 1.0)):
            for proc in self._popens:
                if proc.poll() is None:
                    proc.send_signal(sig)
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + patience
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.02)
        for proc in self._popens:
            proc.wait()
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        for path in self._sockets:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Namespaces:
    """A factory of namespaces (call it with a name prefix) that removes all it
    made, the newest first, when its `with` block ends."""

    def __init__(self):
        self.made: list[Netns] = []

    def __call__(self, prefix: str = "wgcns") -> Netns:
        ns = Netns(prefix)
        self.made.append(ns)
        return ns

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for ns in reversed(self.made):
            ns.close()


def veth(a: Netns, b: Netns) -> tuple[str, str]:
    """A veth cable between two namespaces, both ends up; returns the two names."""
    end_a, end_b = unique_name("va"), unique_name("vb")
    subprocess.run(
        ["ip", "link", "add", end_a, "netns", a.name, "type", "veth", "peer", "name", end_b, "netns", b.name],
        check=True,
    )
    a.run("ip", "link", "set", end_a, "up")
    b.run("ip", "link", "set", end_b, "up")
    return end_a, end_b


def wait_for(predicate, timeout=5.0, interval=0.02, what="condition"):
    """Polls predicate until it is true; fails the test with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def resolv_conf(ns: Netns, nameserver: str):
    """/etc/netns/NAME/resolv.conf naming nameserver, which `ip netns exec`
    mounts over /etc/resolv.conf for what runs in ns (glibc's resolver)."""
    parent = "/etc/netns"
    made_parent = not os.path.isdir(parent)
    directory = f"{parent}/{ns.name}"
    os.makedirs(directory)
    try:
        with open(f"{directory}/resolv.conf", "w") as f:
            f.write(f"nameserver {nameserver}\n")
        yield
    finally:
        shutil.rmtree(directory)
        if made_parent:
            try:
                os.rmdir(parent)
            except OSError:     # another test's namespace has its files there now
                pass


def start_dnsmasq(ns: Netns, listen: str, *options: str) -> subprocess.Popen:
    """Debian's dnsmasq in ns answering on listen alone, from no configuration
    but options (such as --addn-hosts=FILE and --local=/test/); it ends with ns."""
    return ns.popen("dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                    "--bind-interfaces", f"--listen-address={listen}", "--pid-file=", "--user=root", "--group=root",
                    *options, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
