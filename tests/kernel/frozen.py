"""A guest that carries this tree frozen into a one-file wgc.

The guest has no Python, so the built-in wg and wg-quick run there as the
PyInstaller one-file executable, built once per test session and placed on
the guest's PATH as /usr/bin/wgc.
"""
import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

import guest as guest_module
from guest import GuestError, Unavailable, booted, unavailable

from netns import Netns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_frozen: list[str] = []     # the one-file wgc, once built


def frozen_wgc() -> str:
    """dist/wgc built from this tree (once per session) into a temporary directory."""
    if _frozen:
        return _frozen[0]
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        unavailable("PyInstaller is not installed")
    workdir = tempfile.mkdtemp(prefix="wgc-kernel-frozen-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--distpath", os.path.join(workdir, "dist"),
         "--workpath", os.path.join(workdir, "build"), os.path.join(REPO, "packaging", "wgc.spec")],
        cwd=REPO, env=dict(os.environ, WGC_BUNDLE="onefile"), capture_output=True, text=True, timeout=600,
        check=False)
    assert proc.returncode == 0, f"PyInstaller failed:\n{proc.stderr[-3000:]}"
    _frozen.append(os.path.join(workdir, "dist", "wgc"))
    return _frozen[0]


@contextlib.contextmanager
def guest_with_wgc(prefix: str, programs: dict[str, str] | None = None):
    """A booted guest, cabled into a new namespace, with the frozen wgc at /usr/bin/wgc.

    Skips (or, with WGC_KERNEL_REQUIRED=1, fails) when no guest can be had.
    """
    if os.geteuid() != 0:
        unavailable("needs root")
    bindir = tempfile.mkdtemp(prefix="wgc-kernel-bin-")
    ns = Netns(prefix)
    try:
        os.symlink(frozen_wgc(), os.path.join(bindir, "wgc"))
        # The guest carries what `which` finds: the frozen wgc, not the venv's script.
        saved_path, saved_programs = os.environ["PATH"], dict(guest_module.GUEST_PROGRAMS)
        os.environ["PATH"] = bindir + os.pathsep + saved_path
        guest_module.GUEST_PROGRAMS["wgc"] = True
        try:
            context = booted(ns, programs=programs)
            vm = context.__enter__()
        except (Unavailable, GuestError) as error:
            unavailable(str(error))
        finally:
            os.environ["PATH"] = saved_path
            guest_module.GUEST_PROGRAMS.clear()
            guest_module.GUEST_PROGRAMS.update(saved_programs)
        try:
            yield vm
        finally:
            context.__exit__(None, None, None)
    finally:
        ns.close()
        shutil.rmtree(bindir, ignore_errors=True)
