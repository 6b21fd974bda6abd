"""Debian's podman with a store of its own, for tests that build and run wgc's images.

Everything the engine keeps (images, containers, its run state) lives in one
temporary directory named by CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, so a
test neither sees nor touches the machine's images, and close() removes it all,
even after a failure.  The base image comes from a root file system tarball
named by WGC_CONTAINER_BASE (`just container-base` makes it with debootstrap
--variant=minbase bookworm), imported, as no registry is reachable here.

Two settings are needed on this sandbox and harmless elsewhere, and are set in
the engine's containers.conf rather than on each command line, so the tests run
exactly the commands the README gives:
- runtime runc: crun 1.8 refuses a host whose cgroups are mixed (v1 controllers
  beside a cgroup2 hierarchy with a controller of its own): "cgroups in hybrid
  mode not supported, drop all controllers from cgroupv2".
- default_ulimits no higher than the limits the test runs under: podman asks
  for nofile 1048576 (and its conmon runs with nproc 32768), and raising a hard
  limit needs CAP_SYS_RESOURCE, which this sandbox's bounding set lacks
  ("setrlimit RLIMIT_NOFILE: Operation not permitted").
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile

BASE_VARIABLE = "WGC_CONTAINER_BASE"
BASE_IMAGE = "localhost/wgc-test-base:bookworm"
NPROC = 4096        # a lower limit may always be set; wgc needs a few threads


def base_tarball() -> str:
    return os.environ.get(BASE_VARIABLE, "")


def missing() -> str | None:
    """Why the engine cannot be used here, or None."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman runc)"
    if not os.path.exists(base_tarball()):
        return f"{BASE_VARIABLE} names no base root file system tarball (just container-test makes one)"
    return None


class Podman:
    """podman with a private store; call it with podman's arguments."""

    def __init__(self):
        self.home = tempfile.mkdtemp(prefix="wgc-podman-")
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        with open(os.path.join(self.home, "containers.conf"), "w") as f:
            f.write(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={NPROC}:{NPROC}"]\n'
                    f'[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                    f'tmp_dir = "{self.home}/tmp"\n')
        with open(os.path.join(self.home, "storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\ngraphroot = "{self.home}/storage"\n'
                    f'runroot = "{self.home}/run"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=os.path.join(self.home, "containers.conf"),
                        CONTAINERS_STORAGE_CONF=os.path.join(self.home, "storage.conf"))

    def __call__(self, *args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        proc = subprocess.run(["podman", *args], env=self.env, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
        return proc

    def import_base(self) -> str:
        self("import", base_tarball(), BASE_IMAGE)
        return BASE_IMAGE

    def build(self, containerfile: str, tag: str, context: str) -> str:
        self("build", "--build-arg", f"BASE={BASE_IMAGE}", "-f", containerfile, "-t", tag, context, timeout=300)
        return tag

    def state(self, name: str) -> tuple[str, int]:
        """(status, exit code) of a container, such as ("exited", 0)."""
        status, code = self("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.split()
        return status, int(code)

    def close(self) -> None:
        """Removes every container and image made here, then the store: what is still
        mounted under it (a container's overlay) is unmounted first."""
        self("rm", "--all", "--force", "--time", "0", check=False)
        self("rmi", "--all", "--force", check=False)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
        for mount in sorted((m for m in mounts if m.startswith(self.home + "/")), reverse=True):
            subprocess.run(["umount", "--lazy", mount], check=False)
        shutil.rmtree(self.home, ignore_errors=True)
