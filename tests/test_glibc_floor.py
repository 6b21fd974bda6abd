"""packaging/glibc_floor.py: the newest GLIBC_x.y an executable's ELF files need, read from
small shared libraries compiled here (a library, so no start-up code adds its own needs)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "packaging"))
from glibc_floor import glibc_floor

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("readelf")), reason="needs gcc and readelf")

OLD = "#include <stdio.h>\nvoid hello(void) { puts(\"hello\"); }\n"
# closefrom came with glibc 2.34.
NEW = "#include <unistd.h>\nvoid tidy(void) { closefrom(3); }\n"


def library(directory: Path, name: str, source: str) -> Path:
    (directory / f"{name}.c").write_text(source)
    built = directory / f"lib{name}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(built), str(directory / f"{name}.c")], check=True)
    return built


def floor_of(*paths: Path) -> tuple[int, int]:
    text = glibc_floor(*paths)
    assert text.startswith("glibc "), text
    major, minor = text.removeprefix("glibc ").split(".")
    return int(major), int(minor)


def test_a_library_calling_closefrom_needs_2_34(tmp_path):
    assert floor_of(library(tmp_path, "new", NEW)) == (2, 34)


def test_a_library_calling_puts_needs_less(tmp_path):
    assert floor_of(library(tmp_path, "old", OLD)) < (2, 34)


def test_a_directory_needs_the_newest_of_its_elf_files(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    library(bundle, "old", OLD)
    library(bundle, "new", NEW)
    (bundle / "notes.txt").write_text("GLIBC_2.99 in a text file is not a need\n")
    assert floor_of(bundle) == (2, 34)
