"""Python face of wgc/_allowed_text.pyx: AllowedIPs made in C."""
from typing import Any

from typing_extensions import disjoint_base

@disjoint_base
class AllowedIPMaker:
    def __new__(cls, slot: Any) -> AllowedIPMaker: ...
    def ipv4_of_texts(self, texts: list[str], shortest: int) -> list[Any] | None: ...
    def take_ipv4_lines(self, answer: bytes, start: int, into: list[Any]) -> int: ...
