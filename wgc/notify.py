"""systemd's service notification protocol (sd_notify(3)), which is small
enough to speak directly: one datagram of KEY=VALUE lines to $NOTIFY_SOCKET.

READY=1 once the control socket listens, STOPPING=1 on the way out, and
WATCHDOG=1 at half the interval systemd asks for in $WATCHDOG_USEC.

The one-file executable runs as two processes: PyInstaller's bootloader, which
systemd started and so watches ($WATCHDOG_PID, the unit's main PID), and this
Python as its child.  The child keeps the watchdog for its parent (the unit
lets any of its processes notify: NotifyAccess=all).
"""
import os
import socket
import sys


class Notifier:
    def __init__(self, environ=os.environ):
        self._address = ""
        self._socket: socket.socket | None = None
        self.watchdog_interval_ns: int | None = None
        path = environ.get("NOTIFY_SOCKET", "")
        if path.startswith(("/", "@")):
            self._address = "\0" + path[1:] if path[0] == "@" else path
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if self._socket is not None and usec.isdigit() and int(usec) > 0 and watched(pid):
            self.watchdog_interval_ns = int(usec) * 1000 // 2

    def _send(self, message: str) -> None:
        if self._socket is not None:
            try:
                self._socket.sendto(message.encode(), self._address)
            except OSError:
                pass  # the manager went away: nothing to tell

    def ready(self, status: str = "") -> None:
        self._send("READY=1\n" + (f"STATUS={status}\n" if status else ""))

    def stopping(self) -> None:
        self._send("STOPPING=1\n")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1\n")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watched(pid: str) -> bool:
    """Whether $WATCHDOG_PID names this process, or the one-file bootloader that runs it."""
    if pid in ("", str(os.getpid())):
        return True
    if not getattr(sys, "frozen", False) or pid != str(os.getppid()):
        return False
    try:
        return os.path.samefile(f"/proc/{pid}/exe", sys.executable)
    except OSError:
        return False
