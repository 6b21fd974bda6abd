"""The oldest glibc a frozen wgc runs on: the newest GLIBC_x.y symbol version any of its ELF files needs.

    python packaging/glibc_floor.py dist/wgc dist/wgc-dir

A one-file executable is its bootloader plus an archive of compressed files; each
ELF file in the archive is unpacked into a temporary directory to be read.  readelf
reads the version needs of any architecture, so ARM builds are judged the same way.
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ELF_MAGIC = b"\x7fELF"


def needed_versions(path: Path) -> set[tuple[int, int]]:
    """The GLIBC_x.y versions in the version-needs section of one ELF file."""
    out = subprocess.run(["readelf", "-W", "--version-info", str(path)], capture_output=True, text=True,
                         check=True).stdout
    needs = out.split("Version needs section", 1)[1] if "Version needs section" in out else ""
    return {(int(major), int(minor)) for major, minor in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", needs)}


def elf_files(path: Path) -> list[Path]:
    files = [p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file() and not p.is_symlink()]
    return [p for p in files if is_elf(p)]


def is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ELF_MAGIC


def packed_versions(path: Path) -> set[tuple[int, int]]:
    """The versions every ELF file packed in a one-file executable's archive needs (none for an ELF
    file without one)."""
    from PyInstaller.archive.readers import ArchiveReadError, CArchiveReader  # type: ignore[import-untyped]

    try:
        archive = CArchiveReader(str(path))
    except ArchiveReadError:
        return set()
    versions: set[tuple[int, int]] = set()
    with tempfile.TemporaryDirectory() as scratch:
        for name in archive.toc:
            data = archive.extract(name)
            if data is None or not data.startswith(ELF_MAGIC):
                continue
            unpacked = Path(scratch) / "elf"
            unpacked.write_bytes(data)
            versions |= needed_versions(unpacked)
    return versions


def glibc_floor(*paths: Path) -> str:
    """"glibc X.Y" for the newest version any of the executables (one-file files or one-dir trees) needs."""
    versions: set[tuple[int, int]] = set()
    for path in paths:
        for elf in elf_files(path):
            versions |= needed_versions(elf) | packed_versions(elf)
    return "glibc {}.{}".format(*max(versions)) if versions else "no glibc symbol versions found"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} EXECUTABLE-OR-DIRECTORY...")
    print(f"needs at least {glibc_floor(*map(Path, sys.argv[1:]))}")
