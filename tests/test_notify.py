"""Whom the systemd watchdog is for (wgc/notify.py): this process, or the one-file bootloader
that started it, and no other."""
import os
import socket
import sys

import pytest

from wgc.notify import Notifier, watched


@pytest.fixture
def environ(tmp_path):
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(tmp_path / "notify"))
    yield {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "30000000"}
    manager.close()


def parent_executable() -> str:
    return os.readlink(f"/proc/{os.getppid()}/exe")


def test_watchdog_for_this_process(environ):
    for pid in ("", str(os.getpid())):
        notifier = Notifier(dict(environ, WATCHDOG_PID=pid))
        assert notifier.watchdog_interval_ns == 15 * 10**9
        notifier.close()


def test_watchdog_for_another_process_is_not_ours(environ):
    notifier = Notifier(dict(environ, WATCHDOG_PID=str(os.getppid())))
    assert notifier.watchdog_interval_ns is None
    notifier.close()
    assert not watched("1")


def test_frozen_child_keeps_its_bootloaders_watchdog(environ, monkeypatch):
    """The parent runs the same executable as this frozen process: it is the one-file bootloader."""
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", parent_executable())
    notifier = Notifier(dict(environ, WATCHDOG_PID=str(os.getppid())))
    assert notifier.watchdog_interval_ns == 15 * 10**9
    notifier.close()
    # Not the parent, or a parent running another program: someone else's watchdog.
    assert not watched("1")
    monkeypatch.setattr(sys, "executable", os.devnull)
    assert not watched(str(os.getppid()))
