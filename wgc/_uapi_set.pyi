"""Python face of wgc/_uapi_set.pyx."""
from typing import Protocol

from _typeshed import ReadableBuffer

LINES_BLANK: int
LINES_MORE: int
LINES_LONG: int
TO_HANDLER: int
VALIDATE: int
COLLECT: int

class _Request(Protocol):
    def line(self, raw: bytes) -> None: ...
    def collects(self) -> int: ...
    def add_allowed_ips(self, records: bytes) -> None: ...

def scan_lines(buffer: ReadableBuffer, start: int, max_line: int) -> tuple[int, int, int]: ...
def parse_prefix_record(text: bytes) -> bytes | None: ...
def apply_lines(text: ReadableBuffer, request: _Request) -> None: ...
