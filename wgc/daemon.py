"""The daemon: start-up, daemonizing, the control loop and shutdown.

Start-up follows wireguard-go: create the TUN, open the control socket, then
(unless in the foreground) re-execute ourselves with both descriptors
inherited, because a plain fork would break a frozen one-file executable.
The parent waits until the child reports that it runs on its own, so a
script may move or rename the interface as soon as the parent exits.

The control loop (this thread) serves the device's handshakes and timers,
link events (followed into another namespace when the interface is moved
there), signals and the three other shutdown triggers: the socket file
removed, the interface deleted, the TUN gone.  This thread never changes
namespace: the UDP sockets stay where the daemon started.  The UAPI clients
are served by wgc.uapi_server's thread, which holds the device lock per
request; with WGC_METRICS set, the scrapes by wgc.metrics's thread, which
holds it while it copies the figures.
"""
import fcntl
import functools
import os
import selectors
import signal
import socket
import stat
import sys
import time

import wgc
from wgc import __version__
from wgc._dataplane import MAX_WORKERS
from wgc._os import watch_file
from wgc._tun import Tun
from wgc.constants import DEFAULT_MTU
from wgc.cpus import available_cpus
from wgc.device import Device
from wgc.linkwatch import LinkWatch
from wgc.log import make_logger
from wgc.notify import Notifier
from wgc.paths import SOCKET_DIRECTORY, socket_path
from wgc.uapi_server import UAPIServer, listen_control

READY_TIMEOUT = 10.0
ENV_TUN_FD, ENV_UAPI_FD, ENV_FOREGROUND, ENV_READY_FD = (
    "WG_TUN_FD", "WG_UAPI_FD", "WG_PROCESS_FOREGROUND", "WGC_READY_FD")
# WGC_OFFLOAD=off turns the offloads off: the TUN without segmentation (one
# packet per read or write) and the UDP sockets without GSO and GRO.
ENV_OFFLOAD = "WGC_OFFLOAD"
# WGC_METRICS=ADDR:PORT serves GET /metrics there (wgc.metrics); unset, nothing listens.
ENV_METRICS = "WGC_METRICS"
# WGC_WORKERS=N: the threads that seal and open each batch of packets, the
# data-plane thread included (wgc._workers).  Unset, half the CPUs this
# process may use (wgc.cpus: affinity and cgroup quota), at least one: every
# packet costs the kernel about as much again (TUN, UDP, and the TCP of the
# programs using the tunnel), and on the 2-core development machine, with
# both ends of a tunnel under full load, a second thread gave 0.86-0.92 of
# the TCP throughput for 1.07-1.10 times the CPU per GB (README, "Crypto
# workers").
ENV_WORKERS = "WGC_WORKERS"


def offload() -> bool:
    return os.environ.get(ENV_OFFLOAD, "on") != "off"


def crypto_workers() -> int:
    """WGC_WORKERS parsed (ValueError if it is not 1 to MAX_WORKERS), or half the CPUs available."""
    text = os.environ.get(ENV_WORKERS)
    if not text:
        return max(1, available_cpus() // 2)
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_WORKERS):
        raise ValueError(f"{text!r} is not a number of threads from 1 to {MAX_WORKERS}")
    return int(text)


def metrics_address() -> tuple[int, tuple] | None:
    """WGC_METRICS parsed (ValueError if malformed); None when unset.  wgc.metrics
    is imported only then: an endpoint nobody asked for costs no memory."""
    text = os.environ.get(ENV_METRICS)
    if not text:
        return None
    from wgc.metrics import parse_address

    return parse_address(text)


def uapi_listen(iface: str) -> socket.socket:
    """The interface's control socket in /var/run/wireguard, as wg(8) looks for it."""
    os.makedirs(SOCKET_DIRECTORY, mode=0o755, exist_ok=True)
    return listen_control(socket_path(iface))


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main(iface: str, foreground: bool) -> int:
    # A stop signal that arrives while we set up waits until the control loop
    # can handle it (and unlink the socket) rather than killing us midway.
    # The re-executed child starts with no mask (a frozen one-file launcher must
    # be able to pass signals on) and blocks them again here.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    foreground = foreground or os.environ.get(ENV_FOREGROUND) == "1"
    log = make_logger(iface)
    try:
        metrics = metrics_address()
    except ValueError as e:
        log.error("%s: %s", ENV_METRICS, e)
        return 1
    try:
        workers = crypto_workers()
    except ValueError as e:
        log.error("%s: %s", ENV_WORKERS, e)
        return 1
    try:
        inherited = os.environ.get(ENV_TUN_FD)
        tun = Tun.adopt(int(inherited)) if inherited else Tun.create(iface, DEFAULT_MTU, offload=offload())
    except (OSError, ValueError) as e:
        log.error("Failed to create TUN device: %s", getattr(e, "strerror", None) or e)
        return 1
    if tun.name != iface:
        iface = tun.name
        log = make_logger(iface)
    log.debug("Starting wgc version %s", __version__)
    try:
        inherited = os.environ.get(ENV_UAPI_FD)
        if inherited:
            listener = socket.socket(fileno=int(inherited))
            listener.set_inheritable(False)
        else:
            listener = uapi_listen(iface)
    except (OSError, ValueError) as e:
        log.error("UAPI listen error: %s", getattr(e, "strerror", None) or e)
        return 1
    if not foreground:
        return _daemonize(tun, listener, log)
    return Daemon(iface, tun, listener, log, metrics, workers).run()


def _daemonize(tun: Tun, listener: socket.socket, log) -> int:
    """Starts the foreground child with our descriptors as 3 and 4, waits for it."""
    ready_read, ready_write = os.pipe()
    verbose = os.environ.get("LOG_LEVEL", "") not in ("", "silent")
    devnull = os.open(os.devnull, os.O_RDWR)
    # Park every descriptor above 9 first, so the dup2s below cannot clobber each other.
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (tun.fd, listener.fileno(), ready_write)]
    actions = [
        (os.POSIX_SPAWN_DUP2, devnull, 0),
        (os.POSIX_SPAWN_DUP2, 1 if verbose else devnull, 1),
        (os.POSIX_SPAWN_DUP2, 2 if verbose else devnull, 2),
        (os.POSIX_SPAWN_DUP2, parked[0], 3),
        (os.POSIX_SPAWN_DUP2, parked[1], 4),
        (os.POSIX_SPAWN_DUP2, parked[2], 5),
    ]
    env = dict(os.environ, **{ENV_TUN_FD: "3", ENV_UAPI_FD: "4", ENV_FOREGROUND: "1", ENV_READY_FD: "5"})
    if getattr(sys, "frozen", False):
        # A frozen one-file child must unpack itself anew: ours goes when we exit.
        env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
        argv = [sys.executable]
    else:
        # The child must import this very wgc, not whatever a wgc/ directory
        # in the working directory holds: -P drops the working directory from
        # sys.path, PYTHONPATH names where our package lives.
        home = os.path.dirname(os.path.dirname(os.path.abspath(wgc.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [home, env.get("PYTHONPATH")]))
        argv = [sys.executable, "-P", "-m", "wgc"]
    try:
        os.posix_spawn(argv[0], argv + sys.argv[1:], env, file_actions=actions, setsid=True, setsigmask=())
    except OSError as e:
        log.error("Failed to daemonize: %s", e.strerror or e)
        return 1
    finally:
        for fd in parked + [devnull, ready_write]:
            os.close(fd)
    # The child holds the TUN and the socket now; ours must not keep them alive.
    tun.close()
    listener.detach()
    return 0 if _child_ready(ready_read) else 1


def _child_ready(ready_read: int) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    with os.fdopen(ready_read, "rb", buffering=0) as pipe:
        selector = selectors.DefaultSelector()
        selector.register(pipe, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(deadline - time.monotonic()):
                return pipe.read(16) == b"ready\n"
    return False


class Daemon:
    def __init__(self, iface: str, tun: Tun, listener: socket.socket, log,
                 metrics: tuple[int, tuple] | None = None, workers: int = 1):
        self.iface = iface
        self.tun = tun
        self.listener = listener
        self.log = log
        self.path = socket_path(iface)
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.device = Device(iface, tun, log, udp_offload=offload(), workers=workers)
        self.uapi = UAPIServer(self.device, listener, log)
        if metrics is not None:
            from wgc.metrics import MetricsServer

            self.metrics: MetricsServer | None = MetricsServer(self.device, metrics, log)
        else:
            self.metrics = None
        self.device.on_fatal = self._fatal
        self.links = LinkWatch(tun)
        self.ever_running = False
        self.notifier = Notifier()
        self.next_watchdog: int | None = None
        try:
            self.socket_watch: int | None = watch_file(self.path)
        except OSError:
            self.socket_watch = None  # a supervisor's socket may live elsewhere
        self._signal_read, self._signal_write = socket.socketpair()
        for s in (self._signal_read, self._signal_write):
            s.setblocking(False)

    def run(self) -> int:
        signal.set_wakeup_fd(self._signal_write.fileno())
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self.selector.register(self.device.wakeup_fd, selectors.EVENT_READ, self._device_events)
        self.selector.register(self.links, selectors.EVENT_READ, self._link_events)
        self.selector.register(self._signal_read, selectors.EVENT_READ, self._drain_signals)
        if self.socket_watch is not None:
            self.selector.register(self.socket_watch, selectors.EVENT_READ,
                                   functools.partial(self._socket_changed, self.socket_watch))
        self.device.up()  # wireguard-go starts up; link events move it later
        self.log.debug("Device started")
        self.uapi.start()
        self.log.debug("UAPI listener started")
        if self.metrics is not None:
            try:
                self.metrics.start()
            except OSError as e:
                self.log.error("Metrics listen error: %s", e.strerror or e)
                self._shutdown()
                return 1
            self.log.debug("Metrics listener started on port %d", self.metrics.port)
        self.log.debug("Following the interface into other namespaces by %s",
                       "events" if self.links.hears_everywhere else "polling once a second")
        self._tell_parent()
        self.notifier.ready(f"listening on {self.path}")
        watchdog_interval = self.notifier.watchdog_interval_ns
        if watchdog_interval:
            self.next_watchdog = time.monotonic_ns()
        try:
            while not self.stopping:
                now = time.monotonic_ns()
                if watchdog_interval and self.next_watchdog is not None and now >= self.next_watchdog:
                    self.notifier.watchdog()
                    self.next_watchdog = now + watchdog_interval
                deadlines = [d for d in (self.device.next_deadline(), self.next_watchdog, self.links.deadline())
                             if d is not None]
                timeout = max(0.0, (min(deadlines) - now) / 1e9) if deadlines else None
                for key, _ in self.selector.select(timeout):
                    key.data()
                    if self.stopping:
                        break  # type: ignore[unreachable]  # key.data() may have set it
                if not self.stopping:
                    now = time.monotonic_ns()
                    self._apply(self.links.poll(now))
                if not self.stopping:
                    self.device.run_timers(now)
        finally:
            self._shutdown()
        return 0

    def _tell_parent(self):
        fd = os.environ.pop(ENV_READY_FD, None)
        if fd is not None:
            try:
                os.write(int(fd), b"ready\n")
                os.close(int(fd))
            except (OSError, ValueError):
                pass

    # events ------------------------------------------------------------------------

    def _device_events(self):
        self.device.process_events()

    def _link_events(self):
        self._apply(self.links.read())

    def _apply(self, events):
        """Follows the link: up, down, MTU; its deletion ends the daemon.  A
        link moved to another namespace is followed there (wgc.linkwatch)."""
        for event in events:
            if event.deleted:
                self.log.debug("Interface deleted")
                self._stop()
                return
            if event.mtu:
                self.device.set_mtu(event.mtu)
            if event.running:
                self.ever_running = True
                self.device.up()
            elif self.ever_running:
                self.device.down()

    def _socket_changed(self, watch: int):
        try:
            os.read(watch, 4096)
        except BlockingIOError:
            pass
        try:
            os.lstat(self.path)
        except FileNotFoundError:
            self.log.debug("UAPI socket removed")
            self._stop()

    def _on_signal(self, signum, frame):
        self._stop()

    def _drain_signals(self):
        try:
            self._signal_read.recv(512)
        except BlockingIOError:
            pass

    def _fatal(self, reason: str):
        self.log.error("%s", reason)
        self._stop()

    def _stop(self):
        self.stopping = True

    def _shutdown(self):
        self.log.debug("Shutting down")
        self.notifier.stopping()
        self.notifier.close()
        signal.set_wakeup_fd(-1)
        self.selector.close()
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass  # already removed: that may be why we stop
        self.uapi.close()
        if self.metrics is not None:
            self.metrics.close()
        self.listener.close()
        self.device.close()
        self.tun.close()
        if self.socket_watch is not None:
            os.close(self.socket_watch)
        self.links.close()
