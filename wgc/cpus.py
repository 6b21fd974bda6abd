"""How many CPUs this process may use: the CPUs its affinity mask allows,
no more than its cgroups' CPU quotas add up to (rounded up), as Go's runtime
(GOMAXPROCS since Go 1.25) and the JVM count them for containers.

The quota is read from every cgroup on the way from the process's own to
the root of the hierarchy it sees, in both layouts: cgroup v2's `cpu.max`
("max 100000", or "50000 100000" for half a CPU) and v1's
`cpu.cfs_quota_us` (-1 for none) over `cpu.cfs_period_us`.  Whatever cannot
be read counts as no limit.
"""
from __future__ import annotations

import math
import os
from pathlib import Path


def available_cpus(root: str = "/") -> int:
    """At least 1.  root: where /proc and /sys are (tests give a fake tree)."""
    count = len(os.sched_getaffinity(0))
    quota = cgroup_quota(root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def cgroup_quota(root: str = "/") -> float | None:
    """The smallest CPU quota, in CPUs, of the process's cgroups and their
    ancestors; None when none is set."""
    base = Path(root)
    try:
        lines = (base / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            quotas += _walk(base / "sys/fs/cgroup", path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                quotas += _walk(base / "sys/fs/cgroup" / mount, path, _v1_quota)
    return min(quotas) if quotas else None


def _walk(mount: Path, path: str, read) -> list[float]:
    """read(directory) for the cgroup at path under mount and each ancestor."""
    parts = [p for p in path.split("/") if p]
    found = []
    for depth in range(len(parts), -1, -1):
        quota = read(mount.joinpath(*parts[:depth]))
        if quota is not None:
            found.append(quota)
    return found


def _v2_quota(directory: Path) -> float | None:
    try:
        fields = (directory / "cpu.max").read_text().split()
        if len(fields) != 2 or fields[0] == "max":
            return None
        quota, period = int(fields[0]), int(fields[1])
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
