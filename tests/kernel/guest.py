"""A Debian Linux kernel under QEMU, as a WireGuard peer for tests.

The host keeps nothing of it: the kernel package is fetched with
`apt-get download` and unpacked into a cache directory, the guest's root is
an initramfs made here (busybox, the host's own `wg`, `ip` and `iperf3` with
their shared libraries, and the few kernel modules WireGuard and the virtual
devices need), and QEMU runs inside a network namespace the test made, where
its tap device appears.  Only QEMU itself is installed from Debian when it is
missing, as a program of the host.

The guest is driven through a virtio serial port: each command goes out as
one base64 line, and comes back as its stdout, stderr and exit status between
markers.  Its console (the first serial port) is written to a log file that
errors quote.
"""
import base64
import contextlib
import glob
import itertools
import lzma
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass

import pytest

from netns import Netns, unique_name

KERNEL_META_PACKAGE = "linux-image-amd64"
QEMU_PACKAGE = "qemu-system-x86"
QEMU = "qemu-system-x86_64"
BUSYBOX_PACKAGE = "busybox-static"

# What the guest loads, dependencies first; resolved from each module's
# .modinfo "depends=" because the package ships no modules.dep.
GUEST_MODULES = ["virtio_pci", "virtio_net", "virtio_console", "virtio_rng", "wireguard"]

# A guest whose root is an ext4 disk (virtio-blk) brings what mounts it, and the TUN device
# for userspace WireGuard; crc32c is ext4's checksum, asked for as a soft dependency only.
ROOT_DISK_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "virtio_net", "virtio_console",
                     "virtio_rng", "tun"]

# Host programs copied into the guest when present (wg and ip are required).
GUEST_PROGRAMS = {"wg": True, "ip": True, "iperf3": False}

CONTROL_PORT = "wgc.ctl"


class Unavailable(Exception):
    """The guest cannot be had on this machine; the message says why."""


def cache_dir() -> str:
    base = os.environ.get("WGC_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "wgc-kernel")
    os.makedirs(base, exist_ok=True)
    return base


def _run(*cmd, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


_apt_updated = False


def _apt(*args, cwd=None) -> subprocess.CompletedProcess:
    """apt-get with args; on failure, once per process, `apt-get update` and again."""
    global _apt_updated
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(2):
        proc = subprocess.run(["apt-get", *args], capture_output=True, text=True, cwd=cwd,
                              env=env, timeout=900, check=False)
        if proc.returncode == 0 or _apt_updated or attempt == 1:
            return proc
        _apt_updated = True
        _run("apt-get", "update", "-q", timeout=900)
    return proc


def ensure_qemu() -> str:
    path = shutil.which(QEMU)
    if path:
        return path
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise Unavailable(f"{QEMU} is not installed and apt-get cannot install it here")
    proc = _apt("install", "-y", "--no-install-recommends", QEMU_PACKAGE)
    path = shutil.which(QEMU)
    if not path:
        raise Unavailable(f"installing {QEMU_PACKAGE} failed: {proc.stderr.strip()[-500:]}")
    return path


def _kernel_package() -> str:
    """The versioned image package the meta package points at (linux-image-6.1.0-N-amd64)."""
    named = os.environ.get("WGC_KERNEL_PACKAGE")
    if named:
        return named
    proc = _run("apt-cache", "depends", KERNEL_META_PACKAGE)
    if not re.search(r"Depends: linux-image-\S+", proc.stdout):
        _apt("update", "-q")
        proc = _run("apt-cache", "depends", KERNEL_META_PACKAGE)
    match = re.search(r"Depends: (linux-image-[0-9]\S*)", proc.stdout)
    if not match:
        raise Unavailable(f"apt-cache does not know {KERNEL_META_PACKAGE}: {proc.stdout}{proc.stderr}")
    return match.group(1)


def _unpacked(package: str) -> str:
    """The directory where `package`'s .deb is unpacked, fetching it the first time."""
    root = os.path.join(cache_dir(), package)
    done = os.path.join(root, ".unpacked")
    if os.path.exists(done):
        return root
    with tempfile.TemporaryDirectory(dir=cache_dir()) as download:
        # _apt is an unprivileged user that may not write our directory.
        os.chmod(download, 0o777)
        proc = _apt("download", package, cwd=download)
        debs = glob.glob(os.path.join(download, "*.deb"))
        if not debs:
            raise Unavailable(f"apt-get download {package} failed: {proc.stderr.strip()[-500:]}")
        # Another test process may be unpacking the same package: each into its own
        # directory, and the first to finish wins.
        extracting = f"{root}.part{os.getpid()}"
        shutil.rmtree(extracting, ignore_errors=True)
        proc = _run("dpkg-deb", "-x", debs[0], extracting)
        if proc.returncode != 0:
            shutil.rmtree(extracting, ignore_errors=True)
            raise Unavailable(f"dpkg-deb -x {debs[0]} failed: {proc.stderr}")
        if os.path.exists(done):
            shutil.rmtree(extracting, ignore_errors=True)
            return root
        shutil.rmtree(root, ignore_errors=True)
        os.rename(extracting, root)
    open(done, "w").close()
    return root


@dataclass
class Kernel:
    version: str        # the modules directory name, such as 6.1.0-56-amd64
    vmlinuz: str
    modules: str        # .../lib/modules/VERSION


def ensure_kernel() -> Kernel:
    root = _unpacked(_kernel_package())
    images = sorted(glob.glob(os.path.join(root, "boot", "vmlinuz-*")))
    if not images:
        raise Unavailable(f"no vmlinuz in {root}")
    version = os.path.basename(images[-1])[len("vmlinuz-"):]
    modules = os.path.join(root, "lib", "modules", version)
    if not os.path.isdir(modules):
        raise Unavailable(f"no modules for {version} in {root}")
    return Kernel(version, images[-1], modules)


def ensure_busybox() -> str:
    """A statically linked busybox: the host's when it is one, else busybox-static's, unpacked."""
    host = shutil.which("busybox")
    if host and "not a dynamic executable" in _run("ldd", host).stderr:
        return host
    path = os.path.join(_unpacked(BUSYBOX_PACKAGE), "bin", "busybox")
    if not os.path.exists(path):
        raise Unavailable(f"{BUSYBOX_PACKAGE} has no bin/busybox")
    return path


# ---- kernel modules -------------------------------------------------------

def _read_module(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    return lzma.decompress(data) if path.endswith(".xz") else data


def modinfo(image: bytes) -> dict[str, str]:
    """The key=value strings of an ELF64 module's .modinfo section (the last of each key)."""
    if image[:4] != b"\x7fELF" or image[4] != 2:
        raise ValueError("not an ELF64 object")
    shoff, = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)

    def section(index):
        base = shoff + index * shentsize
        name, = struct.unpack_from("<I", image, base)
        offset, size = struct.unpack_from("<QQ", image, base + 0x18)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        end = image.index(b"\0", names_at + name)
        if image[names_at + name:end] == b".modinfo":
            info = {}
            for entry in image[offset:offset + size].split(b"\0"):
                key, sep, value = entry.decode(errors="replace").partition("=")
                if sep:
                    info[key] = value
            return info
    return {}


def module_files(modules_dir: str) -> dict[str, str]:
    """Module name (underscores) -> path of its .ko file."""
    found = {}
    for path in glob.glob(os.path.join(modules_dir, "kernel", "**", "*.ko*"), recursive=True):
        name = os.path.basename(path).split(".ko")[0].replace("-", "_")
        found[name] = path
    return found


def load_order(modules_dir: str, wanted: list[str]) -> list[str]:
    """Paths of the wanted modules and everything they depend on, dependencies first."""
    files = module_files(modules_dir)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str):
        name = name.replace("-", "_")
        if name in visiting or files.get(name) in order:
            return
        if name not in files:
            raise Unavailable(f"kernel module {name} is neither a file nor listed by the package")
        visiting.add(name)
        depends = modinfo(_read_module(files[name])).get("depends", "")
        for dependency in filter(None, depends.split(",")):
            visit(dependency)
        order.append(files[name])

    builtin_path = os.path.join(modules_dir, "modules.builtin")
    builtin = set()
    if os.path.exists(builtin_path):
        with open(builtin_path) as f:
            builtin = {os.path.basename(line.strip()).split(".ko")[0].replace("-", "_") for line in f}
    for name in wanted:
        if name.replace("-", "_") not in builtin:
            visit(name)
    return order


# ---- initramfs ------------------------------------------------------------

class Cpio:
    """A newc cpio archive written entry by entry (what the kernel unpacks as initramfs)."""

    def __init__(self, path: str):
        self._file = open(path, "wb")  # noqa: SIM115  (closed by close(), after the last entry)
        self._inode = itertools.count(1)
        self._made: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b""):
        header = "070701" + "".join(f"{value:08x}" for value in (
            next(self._inode), mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
        self._file.write(header.encode() + name.encode() + b"\0")
        self._pad()
        self._file.write(data)
        self._pad()

    def _pad(self):
        self._file.write(b"\0" * (-self._file.tell() % 4))

    def directory(self, name: str):
        name = name.strip("/")
        if not name or name in self._made:
            return
        self.directory(os.path.dirname(name))
        self._made.add(name)
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o755):
        name = name.strip("/")
        self.directory(os.path.dirname(name))
        if name not in self._made:
            self._made.add(name)
            self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str):
        name = name.strip("/")
        self.directory(os.path.dirname(name))
        if name not in self._made:
            self._made.add(name)
            self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def close(self):
        self._entry("TRAILER!!!", 0)
        self._file.close()


def shared_libraries(program: str) -> list[str]:
    """The absolute paths ldd names for program (the loader included)."""
    out = _run("ldd", program).stdout
    paths = []
    for line in out.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            paths.append(match.group(1))
    return paths


def _copy_with_links(cpio: Cpio, path: str):
    """path into the archive at the same place; a symlink brings its target along."""
    if os.path.islink(path):
        target = os.readlink(path)
        cpio.symlink(path, target)
        _copy_with_links(cpio, os.path.normpath(os.path.join(os.path.dirname(path), target)))
        return
    with open(path, "rb") as f:
        cpio.file(path, f.read(), os.stat(path).st_mode & 0o777)


# Finds the virtio serial port named @@PORT@@ and serves commands on it, one
# base64 line each, answering stdout, stderr (base64) and the exit status between
# markers.  The initramfs's /init ends with it; the systemd guest runs it as a service.
SERVE = r"""port=""
scratch=${SCRATCH:-/tmp}
for i in $(seq 1 100); do
    for p in /sys/class/virtio-ports/*; do
        [ -r "$p/name" ] && [ "$(cat "$p/name")" = "@@PORT@@" ] && port=/dev/$(basename "$p")
    done
    [ -n "$port" ] && [ -e "$port" ] && break
    sleep 0.1
done
echo "@@READY $(uname -r) port=$port"
exec 3<>"$port"
n=0
while true; do
    if ! IFS=' ' read -r id code <&3; then
        # No host on the port: wait for one (bounded by the host's life).
        sleep 0.2
        continue
    fi
    echo "$code" | base64 -d > $scratch/.cmd
    sh -c "[ -r /etc/programs.sh ] && . /etc/programs.sh; . $scratch/.cmd" </dev/null >$scratch/.out 2>$scratch/.err
    rc=$?
    {
        echo "@@OUT $id"; base64 $scratch/.out
        echo "@@ERR $id"; base64 $scratch/.err
        echo "@@END $id $rc"
    } >&3
done
""".replace("@@PORT@@", CONTROL_PORT)

# What every initramfs's /init does first: busybox's applets, the kernel's file
# systems, and the modules in /etc/modules.load.
INIT_START = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin:/sbin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules.load); do
    insmod "$m" || echo "@@INSMOD-FAILED $m"
done
"""

# The guest whose root is the initramfs: it serves commands itself.
INIT = INIT_START + r"""mount -t tmpfs tmpfs /tmp
mkdir -p /run /var/run && mount -t tmpfs tmpfs /run
ip link set lo up
""" + SERVE

# The guest whose root is the disk /dev/vda: its own /sbin/init (systemd) takes over.
ROOT_DISK_INIT = INIT_START + r"""for i in $(seq 1 100); do [ -b /dev/vda ] && break; sleep 0.1; done
mkdir -p /newroot
mount -t ext4 /dev/vda /newroot || echo "@@ROOT-FAILED"
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
"""


def start_initramfs(path: str, busybox: str, init: str) -> Cpio:
    """A new initramfs at path with the directories, busybox and /init."""
    cpio = Cpio(path)
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc",
                      "root", "var"):
        cpio.directory(directory)
    with open(busybox, "rb") as f:
        cpio.file("bin/busybox", f.read())
    cpio.file("init", init.encode())
    return cpio


def add_modules(cpio: Cpio, kernel: Kernel, wanted: list[str]):
    """The wanted modules with their dependencies, and /etc/modules.load listing them in order."""
    loads = []
    for index, module in enumerate(load_order(kernel.modules, wanted)):
        name = f"lib/modules/{index:02d}-{os.path.basename(module).split('.ko')[0]}.ko"
        cpio.file(name, _read_module(module), 0o644)
        loads.append("/" + name)
    cpio.file("etc/modules.load", ("\n".join(loads) + "\n").encode(), 0o644)


def build_initramfs(path: str, kernel: Kernel, busybox: str,
                    programs: dict[str, str] | None = None) -> list[str]:
    """Writes the guest's initramfs to path; returns the programs it carries.

    programs adds name -> host path: each goes to /usr/bin/NAME with its libraries.
    """
    cpio = start_initramfs(path, busybox, INIT)
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
    cpio.file("etc/group", b"root:x:0:\n", 0o644)
    carried = []
    wanted = {name: (shutil.which(name), required) for name, required in GUEST_PROGRAMS.items()}
    wanted.update({name: (host_path, True) for name, host_path in (programs or {}).items()})
    for program, (found, required) in wanted.items():
        if not found:
            if required:
                raise Unavailable(f"the host has no {program} to copy into the guest")
            continue
        with open(found, "rb") as f:
            cpio.file(f"usr/bin/{program}", f.read())
        for library in shared_libraries(found):
            _copy_with_links(cpio, library)
        carried.append(program)
    add_modules(cpio, kernel, GUEST_MODULES)
    # busybox's sh runs its own applets (its small `ip`) before PATH: functions come first.
    cpio.file("etc/programs.sh", "".join(f'{p}() {{ /usr/bin/{p} "$@"; }}\n' for p in carried).encode(), 0o644)
    cpio.close()
    return carried


def build_root_disk_initramfs(path: str, kernel: Kernel, busybox: str):
    """Writes an initramfs that loads ROOT_DISK_MODULES and hands over to /dev/vda's /sbin/init."""
    cpio = start_initramfs(path, busybox, ROOT_DISK_INIT)
    add_modules(cpio, kernel, ROOT_DISK_MODULES)
    cpio.close()


# ---- the guest ------------------------------------------------------------

@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class GuestError(AssertionError):
    pass


def _kvm_usable() -> bool:
    """Whether this process may open /dev/kvm (a boot still decides whether KVM works)."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


class Guest:
    """One booted kernel.  `run()` executes shell code in it; `close()` ends QEMU.

    The guest's eth0 is cabled to `tap` in the namespace `ns`; with root_disk (an ext4
    image) the guest boots that disk's init, and its writes are thrown away with QEMU.
    """

    def __init__(self, ns: Netns, workdir: str, accel: str, boot_timeout: float, root_disk: str | None = None):
        self.ns = ns
        self.root_disk = root_disk
        self.tap = unique_name("wgtap")
        self.accel = accel
        self.console_log = os.path.join(workdir, f"console-{accel}.log")
        self.qemu_errors = os.path.join(workdir, f"qemu-{accel}.err")
        self._buffer = b""
        self._ids = itertools.count(1)
        self._qemu = None
        self._conn = None
        listener_path = os.path.join(workdir, f"ctl-{accel}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(listener_path)
            listener.listen(1)
            self._start(workdir, listener_path)
            listener.settimeout(boot_timeout)
            try:
                self._conn, _ = listener.accept()
            except TimeoutError:
                raise GuestError(f"QEMU did not connect its control port: {self._console_tail()}") from None
        except BaseException:
            self.close()
            raise
        finally:
            listener.close()
        try:
            self._wait_ready(boot_timeout)
        except BaseException:
            self.close()
            raise

    def _start(self, workdir: str, control: str):
        kernel = os.path.join(workdir, "vmlinuz")
        initrd = os.path.join(workdir, "initramfs.cpio")
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else ["-accel", "tcg"]
        mac = "52:54:00:" + ":".join(f"{byte:02x}" for byte in os.urandom(3))
        cmd = [
            QEMU, *accel, "-m", "512", "-smp", "1", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot",
            "-kernel", kernel, "-initrd", initrd,
            "-append", "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init mitigations=off",
            "-chardev", f"file,id=console,path={self.console_log}",
            "-serial", "chardev:console",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=ctl,path={control}",
            "-device", f"virtserialport,chardev=ctl,name={CONTROL_PORT}",
            "-device", "virtio-rng-pci",
            "-netdev", f"tap,id=net0,ifname={self.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
        ]
        if self.root_disk:
            cmd += ["-drive", f"file={self.root_disk},format=raw,if=virtio,snapshot=on"]
        with open(self.qemu_errors, "w") as errors:
            self._qemu = self.ns.popen(*cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=errors)

    def _console_tail(self, lines: int = 30) -> str:
        try:
            with open(self.console_log, errors="replace") as f:
                text = f.read().splitlines()[-lines:]
        except FileNotFoundError:
            text = ["(no console log)"]
        state = "running" if self._qemu and self._qemu.poll() is None else \
            f"exited {self._qemu.returncode if self._qemu else None}"
        try:
            with open(self.qemu_errors, errors="replace") as f:
                state += ": " + f.read().strip()[-400:]
        except FileNotFoundError:
            pass
        return f"QEMU {state}; console:\n" + "\n".join(text)

    def _wait_ready(self, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.console_log, errors="replace") as f:
                    text = f.read()
            except FileNotFoundError:
                text = ""
            if "@@INSMOD-FAILED" in text:
                raise GuestError(f"a module did not load: {self._console_tail()}")
            if "@@ROOT-FAILED" in text:
                raise GuestError(f"the root disk did not mount: {self._console_tail()}")
            if "@@READY" in text:
                if "port=/dev/" not in text.split("@@READY", 1)[1].splitlines()[0]:
                    raise GuestError(f"the guest found no control port: {self._console_tail()}")
                # The port is open: a trivial command proves the loop answers.
                self.run("true", timeout=max(1.0, deadline - time.monotonic()))
                return
            if self._qemu.poll() is not None:
                break
            time.sleep(0.1)
        raise GuestError(f"the guest did not come up in {timeout:.0f} s: {self._console_tail()}")

    def _read_line(self, deadline: float) -> str:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError()
            self._conn.settimeout(remaining)
            try:
                chunk = self._conn.recv(65536)
            except OSError as error:
                if isinstance(error, TimeoutError):
                    raise
                chunk = b""
            if not chunk:
                self.close()
                raise GuestError(f"the control port closed: {self._console_tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def run(self, script: str, check: bool = True, timeout: float = 30) -> Result:
        """Runs shell code in the guest (as root, `sh`), waits for it, returns its output."""
        if self._conn is None:
            raise GuestError("the guest is closed")
        ident = next(self._ids)
        code = base64.b64encode(script.encode()).decode()
        try:
            self._conn.sendall(f"{ident} {code}\n".encode())
        except OSError as error:
            self.close()
            raise GuestError(f"the control port failed ({error}): {self._console_tail()}") from error
        deadline = time.monotonic() + timeout
        parts = {"OUT": [], "ERR": []}
        current = None
        try:
            while True:
                line = self._read_line(deadline)
                if line.startswith("@@"):
                    fields = line[2:].split()
                    if len(fields) >= 2 and fields[1] != str(ident):
                        continue  # a late answer to an earlier command that timed out
                    if fields[0] in parts:
                        current = parts[fields[0]]
                        continue
                    if fields[0] == "END":
                        break
                if current is not None:
                    current.append(line)
        except TimeoutError:
            # The guest's shell still runs it; this connection cannot be trusted any more.
            self.close()
            raise GuestError(f"guest command timed out after {timeout} s: {script!r}") from None
        rc = int(fields[2])
        out, err = (base64.b64decode("".join(parts[k])).decode(errors="replace") for k in ("OUT", "ERR"))
        result = Result(rc, out, err)
        if check and rc != 0:
            raise GuestError(f"guest: {script!r} exited {rc}: {out}{err}")
        return result

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._qemu is not None and self._qemu.poll() is None:
            self._qemu.terminate()
            try:
                self._qemu.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._qemu.kill()
                self._qemu.wait(timeout=5)


def prepare(workdir: str, programs: dict[str, str] | None = None,
            root_disk: str | None = None) -> tuple[str, Kernel, list[str]]:
    """Installs or fetches what is missing; writes vmlinuz and the initramfs into workdir.

    With root_disk the initramfs only mounts the disk and carries no programs.
    """
    if os.geteuid() != 0:
        raise Unavailable("needs root (tap devices, network namespaces, apt-get)")
    qemu = ensure_qemu()
    kernel = ensure_kernel()
    busybox = ensure_busybox()
    shutil.copyfile(kernel.vmlinuz, os.path.join(workdir, "vmlinuz"))
    initramfs = os.path.join(workdir, "initramfs.cpio")
    if root_disk:
        build_root_disk_initramfs(initramfs, kernel, busybox)
        return qemu, kernel, []
    carried = build_initramfs(initramfs, kernel, busybox, programs)
    return qemu, kernel, carried


def accelerators() -> list[str]:
    """What to try, in order: WGC_KERNEL_ACCEL (kvm or tcg) alone, else KVM when it opens, then TCG."""
    chosen = os.environ.get("WGC_KERNEL_ACCEL")
    if chosen:
        if chosen not in ("kvm", "tcg"):
            raise Unavailable(f"WGC_KERNEL_ACCEL={chosen}: kvm or tcg")
        return [chosen]
    return ["kvm", "tcg"] if _kvm_usable() else ["tcg"]


def unavailable(reason: str):
    """Skips the test with the reason, or fails it when WGC_KERNEL_REQUIRED=1."""
    if os.environ.get("WGC_KERNEL_REQUIRED") == "1":
        pytest.fail(f"kernel guest required but unavailable: {reason}")
    pytest.skip(f"no kernel WireGuard guest: {reason}")


@contextlib.contextmanager
def booted(ns: Netns, kvm_probe_timeout: float = 20, tcg_timeout: float = 180,
           programs: dict[str, str] | None = None, root_disk: str | None = None):
    """A guest cabled into ns, on KVM when a first boot there works, else on TCG.

    programs: more host executables to carry, name -> path (found at /usr/bin/NAME).
    root_disk: an ext4 image to boot instead (see Guest); it must serve the control port.

    Raises Unavailable when QEMU or the kernel cannot be had, GuestError when
    no accelerator booted it.  QEMU is ended when the block exits.
    """
    workdir = tempfile.mkdtemp(prefix="wgc-kernel-")
    guest = None
    try:
        prepare(workdir, programs, root_disk)
        failures = []
        for accel in accelerators():
            timeout = kvm_probe_timeout if accel == "kvm" else tcg_timeout
            try:
                guest = Guest(ns, workdir, accel, timeout, root_disk)
                break
            except GuestError as error:
                failures.append(f"{accel}: {error}")
        if guest is None:
            raise GuestError("no accelerator booted the guest:\n" + "\n".join(failures))
        guest.failed_accelerators = failures
        yield guest
    finally:
        if guest is not None:
            guest.close()
        shutil.rmtree(workdir, ignore_errors=True)
