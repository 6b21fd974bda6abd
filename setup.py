"""Builds the compiled modules: every wgc/*.pyx and wgc/netstack/*.pyx becomes an extension.

WGC_ONLY=_trie,_replay limits the build to the named modules, so that work on
one module does not recompile (or trip over) the others.

WGC_SANITIZE=1 builds the debug flavour that `just test-asan` runs: no
optimisation, debug info, AddressSanitizer and UndefinedBehaviorSanitizer, and
Cython's own bounds, index and initialisation checks.  Its generated C goes to
build/asan/c so that it never replaces the normal build's wgc/*.c; pass
--build-base (or --build-lib) to keep its objects apart as well.
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

only = {m for m in os.environ.get("WGC_ONLY", "").split(",") if m}
sanitize = os.environ.get("WGC_SANITIZE") == "1"

# cdivision stays on in both flavours: it is the semantics the code is written
# for (C division, no ZeroDivisionError), and UBSan reports a division by zero.
directives = {"boundscheck": False, "wraparound": False, "cdivision": True}
compile_args = ["-O2", "-Wno-unused-function"]
link_args: list[str] = []
build_dir = None
if sanitize:
    directives |= {"boundscheck": True, "wraparound": True, "initializedcheck": True}
    sanitizers = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    compile_args = ["-O0", "-g", "-fno-omit-frame-pointer", "-fno-wrapv", "-Wno-unused-function", *sanitizers]
    link_args = sanitizers
    build_dir = "build/asan/c"

extensions = []
for path in sorted(glob.glob("wgc/*.pyx") + glob.glob("wgc/netstack/*.pyx")):
    name = os.path.splitext(os.path.basename(path))[0]
    if only and name not in only:
        continue
    package = os.path.dirname(path).replace("/", ".")
    extensions.append(
        Extension(
            f"{package}.{name}",
            [path],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=["dl"] if name == "_crypto" else [],
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives=directives,
        build_dir=build_dir,
        nthreads=2,
    ),
)
