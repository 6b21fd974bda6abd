"""What every fuzz target shares: the import path, the instrumentation, the run.

A target is a file fuzz_NAME.py that defines one_input(data: bytes) and ends
with `common.main(one_input)`; it runs as

    python tests/fuzz/fuzz_NAME.py [libFuzzer flags] [corpus dirs]

and its committed seeds live in tests/fuzz/corpus/NAME/.  wgc's Python
modules are instrumented by atheris as they are imported (inside
`instrumented()`).  The compiled modules (wgc/*.so) are invisible to that;
with WGC_FUZZ_NATIVE=DIR the targets load them from DIR instead, where
tests/fuzz/run.py --native builds copies compiled by clang with
-fsanitize=fuzzer-no-link, so that libFuzzer sees their edges as well.
"""
import contextlib
import inspect
import os
import socket
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (os.path.join(ROOT, "tests"), ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)


@contextlib.contextmanager
def instrumented():
    """Imports of wgc inside this block get atheris's coverage and comparison hooks."""
    import wgc

    native = os.environ.get("WGC_FUZZ_NATIVE")
    if native:
        wgc.__path__.insert(0, os.path.join(native, "wgc"))
        # A subpackage's modules are looked for in its own path only.
        import wgc.netstack

        wgc.netstack.__path__.insert(0, os.path.join(native, "wgc", "netstack"))
    with atheris.instrument_imports(include=["wgc"]):
        yield


def numeric_resolver() -> None:
    """Makes getaddrinfo take numeric hosts only, so that a fuzzed host name is
    refused at once (EAI_NONAME) instead of becoming a DNS query: name
    resolution itself is the C library's, and not fuzzed here."""
    resolve = socket.getaddrinfo

    def numeric(host, port, family=0, type=0, proto=0, flags=0):
        return resolve(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    socket.getaddrinfo = numeric


def corpus_dir(name: str) -> str:
    return os.path.join(HERE, "corpus", name)


def main(one_input) -> None:
    """Fuzzes one_input; the target's own functions are instrumented too, so
    that its checks guide the fuzzer where wgc's code is compiled."""
    module = sys.modules[one_input.__module__]
    for value in list(vars(module).values()):
        if inspect.isfunction(value) and value.__module__ == module.__name__:
            atheris.instrument_func(value)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
