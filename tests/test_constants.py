"""Each protocol constant is written once, in wgc/_constants.pxd.

The compiled modules cimport it and Python reads it through wgc.constants;
a second definition (a literal 148 where INITIATION_SIZE belongs, a second
#define of Reject-After-Messages) could drift from the first, so this test
searches wgc/'s sources for every spelling of the values that matter most.
"""
import re
from pathlib import Path

import pytest

from wgc import _constants, constants

WGC = Path(__file__).resolve().parent.parent / "wgc"
HOME = WGC / "_constants.pxd"


def code_lines():
    """(path, line number, line without its comment) of every source in wgc/."""
    for path in sorted(WGC.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxd", ".pxi", ".h"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#define"):
                line = line.split("#", 1)[0]
            yield path, number, line


# Every way the value could be written; each must occur once in all of wgc/.
SPELLINGS = {
    "REKEY_AFTER_MESSAGES": [r"<<\s*60\b", r"\*\*\s*60\b", r"\b1152921504606846976\b", r"\b0x10{15}\b"],
    "REJECT_AFTER_MESSAGES": [r"<<\s*13\b", r"\*\*\s*13\b", r"\b18446744073709543423\b", r"\b0xf{12}dfff\b"],
    "INITIATION_SIZE": [r"\b148\b"],
    "RESPONSE_SIZE": [r"\b92\b"],
    # 64 is everywhere (batch sizes, word widths): only as a message size.
    "COOKIE_REPLY_SIZE": [r"[=!]=\s*64\b", r"\b64\s*[=!]=", r"\b\w*(COOKIE|REPLY)\w*\s*=\s*64\b"],
    # 16 likewise: only as the name of a header or tag length.
    "TRANSPORT_HEADER_SIZE": [r"\b\w*HEADER\w*\s*=\s*16\b"],
    "TAG_SIZE": [r"\b\w*TAG\w*\s*=\s*16\b"],
}


def test_the_values_are_the_papers():
    assert constants.REKEY_AFTER_MESSAGES == 2**60
    assert constants.REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1
    assert (constants.INITIATION_SIZE, constants.RESPONSE_SIZE, constants.COOKIE_REPLY_SIZE) == (148, 92, 64)
    assert (constants.TRANSPORT_HEADER_SIZE, constants.TAG_SIZE, constants.TRANSPORT_MIN_SIZE) == (16, 16, 32)
    assert constants.MAX_TIMER_HANDSHAKES == 18
    assert constants.REKEY_TIMEOUT == 5 * constants.SECOND


def test_python_reads_the_compiled_values():
    for name in SPELLINGS:
        assert getattr(constants, name) == getattr(_constants, name)


@pytest.mark.parametrize("name", sorted(SPELLINGS))
def test_written_once(name):
    found = [f"{path.relative_to(WGC.parent)}:{number}: {line.strip()}"
             for path, number, line in code_lines()
             if any(re.search(p, line, re.IGNORECASE) for p in SPELLINGS[name])]
    assert len(found) == 1, f"{name} is written {len(found)} times:\n" + "\n".join(found)
    assert found[0].startswith(str(HOME.relative_to(WGC.parent)) + ":")
