"""Builds the compiled modules: every wgc/*.pyx becomes an extension.

WGC_ONLY=_trie,_replay limits the build to the named modules, so that work on
one module does not recompile (or trip over) the others.
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

only = {m for m in os.environ.get("WGC_ONLY", "").split(",") if m}
extensions = []
for path in sorted(glob.glob("wgc/*.pyx")):
    name = os.path.splitext(os.path.basename(path))[0]
    if only and name not in only:
        continue
    extensions.append(
        Extension(
            f"wgc.{name}",
            [path],
            extra_compile_args=["-O2", "-Wno-unused-function"],
            libraries=["dl"] if name == "_crypto" else [],
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        nthreads=2,
    ),
)
