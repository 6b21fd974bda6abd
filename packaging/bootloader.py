"""Builds PyInstaller's bootloader with wgc's temporary-directory check.

The one-file wgc unpacks itself into a temporary directory before any of
its Python runs.  When that directory is on a full or noexec file system,
the stock bootloader fails with messages about zlib or libpython that do not
say what to do.  This script takes the source of the PyInstaller release
installed in this environment, adds a check (one line naming TMPDIR, exit 1)
right after the bootloader creates the directory, builds it (with zlib
linked in, so the bootloader needs nothing from the temporary directory to
start), and installs the result over the installed bootloader.

    python packaging/bootloader.py      # once per environment; `just binary` runs it

It does nothing when the installed bootloader already carries the check.
"""
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import PyInstaller

MARKER = b"wgc: cannot unpack into the temporary directory"
WORK = Path(__file__).resolve().parent.parent / "build" / "bootloader"
INSTALLED = Path(PyInstaller.__file__).parent / "bootloader"

CHECK_FUNCTION = r'''
#include <sys/statvfs.h>
#ifndef ST_NOEXEC
#define ST_NOEXEC 8  /* glibc hides it without _GNU_SOURCE; the kernel's value */
#endif

/* wgc: whether the one-file temporary directory can hold and run the
 * bundle; if not, one line that says why and names TMPDIR. */
static int
wgc_temporary_directory_usable(const struct PYI_CONTEXT *pyi_ctx)
{
    const struct ARCHIVE *archive = pyi_ctx->archive;
    const struct TOC_ENTRY *entry;
    struct statvfs fs;
    unsigned long long needed = 0, room;
    char parent[PYI_PATH_MAX];
    char *slash;

    /* Name the directory the user chose (TMPDIR), not our _MEI one in it. */
    snprintf(parent, sizeof(parent), "%s", pyi_ctx->application_home_dir);
    slash = strrchr(parent, '/');
    if (slash != NULL && slash != parent) {
        *slash = '\0';
    }
    if (statvfs(pyi_ctx->application_home_dir, &fs) != 0) {
        return 1;  /* nothing to judge by: let the extraction try */
    }
    if (fs.f_flag & ST_NOEXEC) {
        fprintf(stderr, "wgc: cannot unpack into the temporary directory %s: its file system is "
                "mounted noexec; set TMPDIR to a directory where programs may run\n", parent);
        return 0;
    }
    for (entry = archive->toc; entry < archive->toc_end;
         entry = pyi_archive_next_toc_entry(archive, entry)) {
        switch (entry->typecode) {
            case ARCHIVE_ITEM_BINARY:
            case ARCHIVE_ITEM_DATA:
            case ARCHIVE_ITEM_ZIPFILE:
            case ARCHIVE_ITEM_SYMLINK:
                needed += entry->uncompressed_length;
        }
    }
    room = (unsigned long long)fs.f_bavail * fs.f_frsize;
    if (room < needed) {
        fprintf(stderr, "wgc: cannot unpack into the temporary directory %s: %llu KiB free, "
                "%llu KiB needed; set TMPDIR to a directory with room\n", parent, room / 1024, needed / 1024);
        return 0;
    }
    return 1;
}

'''

CHECK_CALL = r'''
            if (!wgc_temporary_directory_usable(pyi_ctx)) {
                pyi_recursive_rmdir(pyi_ctx->application_home_dir);
                exit(1);
            }
'''

NO_DIRECTORY = (r'fprintf(stderr, "wgc: cannot create a temporary directory in TMPDIR or in /tmp, '
                r'/var/tmp, /usr/tmp; set TMPDIR to a writable directory\n"); exit(1);')


def edit(text: str, anchor: str, replacement: str) -> str:
    """The text with its one occurrence of anchor replaced."""
    if text.count(anchor) != 1:
        sys.exit(f"bootloader source changed: {anchor!r} found {text.count(anchor)} times")
    return text.replace(anchor, replacement)


def patch(source: Path) -> None:
    main_c = source / "bootloader" / "src" / "pyi_main.c"
    text = main_c.read_text()
    entry = "int\npyi_main(struct PYI_CONTEXT *pyi_ctx)"
    text = edit(text, entry, CHECK_FUNCTION + entry)
    created = 'PYI_DEBUG("LOADER: created temporary directory: %s\\n", pyi_ctx->application_home_dir);\n'
    text = edit(text, created, created + CHECK_CALL)
    text = edit(text, 'PYI_ERROR("Could not create temporary directory!\\n");', NO_DIRECTORY)
    main_c.write_text(text)


def installed_has_check() -> bool:
    return any(MARKER in run.read_bytes() for run in INSTALLED.glob("Linux-*/run"))


def main() -> None:
    if installed_has_check():
        print("bootloader: the installed one already checks the temporary directory")
        return
    version = importlib.metadata.version("pyinstaller")
    work = WORK / version
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    "-d", str(work), f"pyinstaller=={version}"], check=True)
    with tarfile.open(next(work.glob("pyinstaller-*.tar.gz"))) as archive:
        # The "data" filter (refuse links and paths out of work) came in Python 3.11.4.
        archive.extractall(work, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    source = next(p for p in work.iterdir() if p.is_dir())
    patch(source)
    subprocess.run([sys.executable, "./waf", "all", "--static-zlib"], cwd=source / "bootloader", check=True,
                   stdout=subprocess.DEVNULL)
    for built in (source / "PyInstaller" / "bootloader").glob("Linux-*"):
        for name in ("run", "run_d"):
            shutil.copy2(built / name, INSTALLED / built.name / name)
    if not installed_has_check():
        sys.exit("bootloader: the build did not produce the checked bootloader")
    print(f"bootloader: PyInstaller {version}'s bootloader rebuilt with the temporary-directory check")


if __name__ == "__main__":
    main()
