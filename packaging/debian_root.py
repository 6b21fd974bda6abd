"""wgc's executables built inside a Debian root file system of one suite and architecture.

    python packaging/debian_root.py bullseye-amd64   # dist/bullseye-amd64/wgc and wgc-dir/
    python packaging/debian_root.py bookworm-arm64   # dist/bookworm-arm64/wgc and wgc-dir/

An executable made by PyInstaller needs at least the glibc of the system it was
built on, and runs only on the architecture it was built for.  So each build
here happens in a root made with debootstrap from Debian's archive: bullseye's
(glibc 2.31) for x86_64 machines as old as Debian 11 and Ubuntu 20.04, and
bookworm's arm64 one, run under qemu-user through binfmt_misc, for ARM boards.

Each root is kept in WGC_ROOTS_CACHE (default ~/.cache/wgc-roots/SUITE-ARCH);
every step leaves a stamp in the root, so a second run only copies wgc's
source in and builds it again.  Bullseye's Python (3.9) is older than wgc
needs, so that root gets CPython 3.11 built from the upstream tarball of
bookworm's python3.11 source package, fetched by apt from Debian's archive.
"""
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from glibc_floor import glibc_floor  # beside this file, on sys.path for a script and for its importers

ROOT = Path(__file__).resolve().parent.parent

MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("WGC_ROOTS_CACHE", Path.home() / ".cache" / "wgc-roots"))
VENV = "/opt/wgc-venv"
SOURCE = "/build/wgc"  # where wgc's source is copied inside the root
# What setup.py, PyInstaller's spec and the bootloader build read (the tests stay outside).
SOURCE_PARTS = ["wgc", "packaging", "setup.py", "pyproject.toml", "README.md"]
COMPILED = ("*.so", "*.c", "*.html", "__pycache__")  # what a build makes beside the source, not copied
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
PIP_CERT = "/etc/ssl/certs/wgc-host-ca-certificates.crt"  # the host's CA bundle, copied in
RUN_DIR = "/opt/wgc-run"  # where running() puts the executables under test inside the root
CONTROL = "/run/wireguard"  # the daemons' control sockets (never through the root's /var/run symlink)
FORMS = {"one-file": "wgc", "one-dir": "wgc-dir/wgc"}
BUILD_PACKAGES = ["gcc", "libc6-dev", "make", "binutils", "ca-certificates", "zlib1g-dev"]


@dataclass(frozen=True)
class Build:
    suite: str
    arch: str
    packages: tuple[str, ...]
    python: str               # the interpreter the venv is made from
    cpython_from: str = ""    # the suite whose python3.11 source package is built when the suite's is too old

    @property
    def name(self) -> str:
        return f"{self.suite}-{self.arch}"

    @property
    def root(self) -> Path:
        return CACHE / self.name

    @property
    def foreign(self) -> bool:
        return self.arch != host_arch()


CPYTHON_PREFIX = "/opt/python3.11"
BUILDS = {b.name: b for b in [
    Build("bullseye", "amd64",
          ("libssl-dev", "libffi-dev", "libbz2-dev", "liblzma-dev", "xz-utils", "pkg-config"),
          python=f"{CPYTHON_PREFIX}/bin/python3.11", cpython_from="bookworm"),
    Build("bookworm", "arm64", ("python3-dev", "python3-venv"), python="/usr/bin/python3.11"),
]}


def host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def binfmt_ready() -> None:
    """binfmt_misc mounted, so the kernel hands the root's foreign ELF files to qemu-user."""
    path = Path("/proc/sys/fs/binfmt_misc")
    if not (path / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(path)], check=True)
    if not list(path.glob("qemu-*")):
        subprocess.run(["update-binfmts", "--enable"], check=False)
    if not list(path.glob("qemu-*")):
        sys.exit("binfmt_misc has no qemu-user entries: apt-get install qemu-user-static binfmt-support")


@contextlib.contextmanager
def mounted(root: Path, binds: tuple[str, ...] = ()):
    """/proc, /sys and the host's /dev (with /dev/net/tun) inside root, and the host's
    directories binds at the same place there; unmounted again on any exit."""
    done: list[Path] = []
    try:
        for source, target, kind in [("proc", "proc", ["-t", "proc"]), ("sysfs", "sys", ["-t", "sysfs"]),
                                     ("/dev", "dev", ["--rbind"]), *((b, b.lstrip("/"), ["--bind"]) for b in binds)]:
            point = root / target
            point.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *kind, source, str(point)], check=True)
            done.append(point)
            if kind == ["--rbind"]:
                subprocess.run(["mount", "--make-rslave", str(point)], check=True)
        yield root
    finally:
        for point in reversed(done):
            if subprocess.run(["umount", "-R", str(point)], check=False).returncode:
                subprocess.run(["umount", "-R", "-l", str(point)], check=False)


def chroot_command(root: Path, script: str) -> list[str]:
    """The command that runs a shell script inside root with a clean environment."""
    return ["chroot", str(root), "/usr/bin/env", "-i", "HOME=/root", "LANG=C.UTF-8",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive",
            f"PIP_CERT={PIP_CERT}", "/bin/sh", "-ec", script]


def inside(root: Path, script: str) -> None:
    subprocess.run(chroot_command(root, script), check=True)


def step(build: Build, name: str, action) -> None:
    """Run action once per root: its stamp in the root says it is done."""
    stamp = build.root / f".wgc-{name}"
    if stamp.exists():
        return
    started = time.monotonic()
    say(f"{build.name}: {name}")
    action(build)
    stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    say(f"{build.name}: {name} done in {time.monotonic() - started:.0f} s")


def debootstrap(build: Build) -> None:
    shutil.rmtree(build.root, ignore_errors=True)
    build.root.parent.mkdir(parents=True, exist_ok=True)
    include = ",".join(BUILD_PACKAGES + list(build.packages))
    command = ["debootstrap", "--variant=minbase", f"--arch={build.arch}", f"--include={include}"]
    if build.foreign:
        binfmt_ready()
        command.append("--foreign")
    subprocess.run([*command, build.suite, str(build.root), MIRROR], check=True)
    if build.foreign:
        # binfmt's F flag has the kernel open qemu itself, so nothing of qemu is copied in.
        inside(build.root, "/debootstrap/debootstrap --second-stage")


def cpython(build: Build) -> None:
    """CPython 3.11 from the upstream tarball of a newer suite's python3.11 source package, shared
    (PyInstaller bundles libpython), into CPYTHON_PREFIX with its own lib on the run path."""
    (build.root / "etc/apt/sources.list.d/wgc-src.list").write_text(
        f"deb-src {MIRROR} {build.cpython_from} main\n")
    inside(build.root, f"""
        apt-get update -q
        rm -rf /build/cpython && mkdir -p /build/cpython && cd /build/cpython
        apt-get source --download-only -q python3.11/{build.cpython_from}
        tar xf python3.11_*.orig.tar.*
        cd Python-3.11*/
        ./configure -q --prefix={CPYTHON_PREFIX} --enable-shared LDFLAGS=-Wl,-rpath,{CPYTHON_PREFIX}/lib
        make -s -j{os.cpu_count()}
        make -s install
        {build.python} -c 'import ssl, zlib, ctypes, lzma, bz2; print("cpython", ssl.OPENSSL_VERSION)'
    """)


def requirements() -> list[str]:
    """wgc's own dependencies and the build tools, as pyproject.toml names them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tools = [r for r in project["optional-dependencies"]["test"]
             if r.split(">")[0].split("=")[0].lower() in ("cython", "pyinstaller")]
    return [*project["dependencies"], *tools, "setuptools"]


def venv(build: Build) -> None:
    inside(build.root, f"""
        rm -rf {VENV}
        {build.python} -m venv {VENV}
        {VENV}/bin/pip install -q --upgrade pip
        {VENV}/bin/pip install -q {' '.join(shlex.quote(r) for r in requirements())}
    """)


def copy_source(build: Build) -> None:
    """wgc's source as it is in the work tree into the root, over the last build's copy.

    What the last build compiled stays, with the times of the files copied kept, so
    Cython and setuptools compile again only what changed (under qemu-user a full
    build of the compiled modules takes about 20 minutes); a source file gone from
    the work tree goes from the copy too.
    """
    target = build.root / SOURCE.lstrip("/")
    compiled = shutil.ignore_patterns(*COMPILED)
    for part in SOURCE_PARTS:
        path, copy = ROOT / part, target / part
        if path.is_dir():
            for old in [p for p in copy.rglob("*") if p.is_file() and not compiled(str(p.parent), [p.name])]:
                if not (path / old.relative_to(copy)).exists():
                    old.unlink()
            shutil.copytree(path, copy, ignore=compiled, dirs_exist_ok=True)
        else:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)


def build_wgc(build: Build) -> None:
    copy_source(build)
    python = f"{VENV}/bin/python"
    spec = "packaging/wgc.spec"
    inside(build.root, f"""
        cd {SOURCE}
        {python} setup.py -q build_ext --inplace -j {os.cpu_count()}
        {python} packaging/bootloader.py
        WGC_BUNDLE=onefile {python} -m PyInstaller --noconfirm --log-level WARN --distpath dist \
            --workpath build/pyinstaller-onefile {spec}
        WGC_BUNDLE=onedir {python} -m PyInstaller --noconfirm --log-level WARN --distpath dist \
            --workpath build/pyinstaller-onedir {spec}
    """)


def output(build: Build) -> Path:
    """Where the executables of a build land in the work tree."""
    return ROOT / "dist" / build.name


def collect(build: Build) -> Path:
    built = build.root / SOURCE.lstrip("/") / "dist"
    target = output(build)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy2(built / "wgc", target / "wgc")
    shutil.copytree(built / "wgc-dir", target / "wgc-dir", symlinks=True)
    return target


@contextlib.contextmanager
def running(build: Build):
    """The executables of dist/SUITE-ARCH copied into their root and the root mounted, with the
    host's /run/wireguard inside (so the host's wg(8) finds a daemon's control socket there);
    yields the commands that run each form inside the root: {"one-file": [...], "one-dir": [...]}."""
    built = output(build)
    if not (built / "wgc").exists() or not (build.root / ".wgc-venv").exists():
        raise FileNotFoundError(f"{build.name} is not built: packaging/debian_root.py {build.name}")
    if build.foreign:
        binfmt_ready()
    target = build.root / RUN_DIR.lstrip("/")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy2(built / "wgc", target / "wgc")
    shutil.copytree(built / "wgc-dir", target / "wgc-dir", symlinks=True)
    Path(CONTROL).mkdir(parents=True, exist_ok=True)
    with mounted(build.root, binds=(CONTROL,)):
        yield {form: ["chroot", str(build.root), f"{RUN_DIR}/{path}"] for form, path in FORMS.items()}


def make(build: Build) -> Path:
    """The root (made once), then wgc built inside it; the executables' directory in dist/."""
    started = time.monotonic()
    step(build, "debootstrap", debootstrap)
    if build.foreign:
        binfmt_ready()
    # pip reaches PyPI from inside, through the host's name servers and trusting the host's CAs.
    shutil.copy2("/etc/resolv.conf", build.root / "etc/resolv.conf")
    shutil.copy2(HOST_CA, build.root / PIP_CERT.lstrip("/"))
    with mounted(build.root):
        if build.cpython_from:
            step(build, "cpython", cpython)
        step(build, "venv", venv)
        say(f"{build.name}: building wgc")
        build_wgc(build)
    target = collect(build)
    say(f"{build.name}: {target / 'wgc'} and {target / 'wgc-dir'} in {time.monotonic() - started:.0f} s")
    return target


def main() -> None:
    # A SIGTERM unwinds like an error, so the root's mounts come off.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if len(sys.argv) != 2 or sys.argv[1] not in BUILDS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(BUILDS)}")
    target = make(BUILDS[sys.argv[1]])
    print(f"{target.relative_to(ROOT)}: needs at least {glibc_floor(target / 'wgc', target / 'wgc-dir')}")


if __name__ == "__main__":
    main()
