"""Debian's kernel booting a small Debian root with systemd as PID 1.

The root is made once with debootstrap (minbase, plus systemd, systemd-sysv
and iproute2) and kept in a cache directory; each boot copies it, adds the
files the test names (the frozen wgc, units, configurations), enables the
units it names, and writes it into an ext4 image with `mkfs.ext4 -d` (no
loop mount).  The guest boots that image on virtio-blk through an initramfs
that loads the modules and switches to the disk's /sbin/init (guest.py);
QEMU keeps the guest's writes in a temporary overlay.  Inside, a service
serves guest.py's command port, so `Guest.run()` works as in the other
kernel tests.
"""
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile

from guest import SERVE, GuestError, Unavailable, _apt, _run, booted

from netns import Netns

SUITE = "bookworm"
ROOT_PACKAGES = ["systemd", "systemd-sysv", "iproute2"]
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Without udev, systemd never sees dev-ttyS0.device: the serial console's getty would hold
# the boot up for the 90 s a device is waited for.  Nothing logs in here.
MASKED = ["serial-getty@ttyS0.service"]

SERVE_PATH = "/usr/local/sbin/wgc-guest-serve"
# Started before everything else (sysinit), so that a boot stuck later can still be asked.
SERVE_UNIT = f"""[Unit]
Description=The test harness's command port
DefaultDependencies=no

[Service]
ExecStart=/bin/sh {SERVE_PATH}
# Its files in /run: systemd may mount a new /tmp while it serves.
RuntimeDirectory=wgc-guest-serve
Environment=SCRATCH=/run/wgc-guest-serve
StandardOutput=journal+console

[Install]
WantedBy=sysinit.target
"""


def cache_dir() -> str:
    base = os.environ.get("WGC_SYSTEMD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "wgc-systemd")
    os.makedirs(base, exist_ok=True)
    return base


def ensure_debootstrap() -> str:
    path = shutil.which("debootstrap")
    if path:
        return path
    proc = _apt("install", "-y", "--no-install-recommends", "debootstrap")
    path = shutil.which("debootstrap")
    if not path:
        raise Unavailable(f"installing debootstrap failed: {proc.stderr.strip()[-500:]}")
    return path


def base_root() -> str:
    """The cached root directory, made with debootstrap the first time."""
    root = os.path.join(cache_dir(), f"{SUITE}-minbase-systemd")
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    debootstrap = ensure_debootstrap()
    # Another test process may be making it too: each into its own directory, the first wins.
    making = f"{root}.part{os.getpid()}"
    shutil.rmtree(making, ignore_errors=True)
    mirror = os.environ.get("WGC_DEBIAN_MIRROR", DEFAULT_MIRROR)
    proc = _run(debootstrap, "--variant=minbase", "--include=" + ",".join(ROOT_PACKAGES), SUITE, making, mirror,
                timeout=1800)
    if proc.returncode != 0:
        shutil.rmtree(making, ignore_errors=True)
        raise Unavailable(f"debootstrap {SUITE} failed: {(proc.stdout + proc.stderr).strip()[-1000:]}")
    # The downloaded packages would only make each image larger.
    for deb in glob.glob(os.path.join(making, "var", "cache", "apt", "archives", "*.deb")):
        os.unlink(deb)
    if os.path.exists(done):
        shutil.rmtree(making, ignore_errors=True)
        return root
    shutil.rmtree(root, ignore_errors=True)
    os.rename(making, root)
    open(done, "w").close()
    return root


def _write(root: str, path: str, data: bytes, mode: int):
    target = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)    # a new file, never one that may share the cache's inode
    with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
        f.write(data)


def root_disk(workdir: str, files: dict[str, tuple[bytes, int]], enable: list[str]) -> str:
    """An ext4 image of the cached root with files (path -> (content, mode)) and units enabled."""
    root = os.path.join(workdir, "root")
    proc = _run("cp", "-a", base_root(), root)
    if proc.returncode != 0:
        raise Unavailable(f"copying the root failed: {proc.stderr}")
    os.unlink(os.path.join(root, ".complete"))
    setup = {
        SERVE_PATH: (SERVE.encode(), 0o755),
        "/etc/systemd/system/wgc-guest-serve.service": (SERVE_UNIT.encode(), 0o644),
        "/etc/hostname": (b"wgc-guest\n", 0o644),
        "/etc/fstab": (b"", 0o644),
    }
    for path, (data, mode) in {**setup, **files}.items():
        _write(root, path, data, mode)
    for command in (["enable", "wgc-guest-serve.service", *enable], ["mask", *MASKED]):
        proc = _run("chroot", root, "systemctl", *command)
        if proc.returncode != 0:
            raise Unavailable(f"systemctl {command[0]} in the root failed: {proc.stderr}")
    size_mib = int(_run("du", "-sm", root).stdout.split()[0]) * 5 // 4 + 64
    image = os.path.join(workdir, "root.ext4")
    proc = _run("mkfs.ext4", "-q", "-F", "-L", "wgc-root", "-d", root, image, f"{size_mib}M")
    shutil.rmtree(root, ignore_errors=True)
    if proc.returncode != 0:
        raise Unavailable(f"mkfs.ext4 -d failed: {proc.stderr}")
    return image


@contextlib.contextmanager
def booted_systemd(ns: Netns, files: dict[str, tuple[bytes, int]], enable: list[str], timeout: float = 300):
    """A guest running systemd from a root with files and units enabled, cabled into ns.

    Yields it once systemd says the boot finished (`is-system-running --wait`).
    Raises Unavailable or GuestError as booted() does.
    """
    workdir = tempfile.mkdtemp(prefix="wgc-systemd-")
    try:
        try:
            image = root_disk(workdir, files, enable)
        except subprocess.TimeoutExpired as error:
            raise Unavailable(f"{error.cmd[0]} took too long") from error
        with booted(ns, tcg_timeout=timeout, root_disk=image) as vm:
            state = vm.run("systemctl is-system-running --wait", check=False, timeout=timeout)
            if state.stdout.strip() not in ("running", "degraded"):
                raise GuestError(f"systemd did not finish booting ({state.returncode}): {state.stdout}{state.stderr}"
                                 f"{vm.run('systemctl --failed --no-pager', check=False).stdout}")
            yield vm
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
