"""Python face of wgc/_udp.pyx."""
from collections.abc import Sequence
from typing import Any

from typing_extensions import disjoint_base

@disjoint_base
class Address(tuple[Any, ...]):
    """(host, port) or (host, port, flowinfo, scope_id); local is (source address, ifindex) or None."""

    local: tuple[str, int] | None

def plan(datagrams: Sequence[tuple[int, tuple[Any, ...]]], family: int, gso: bool = True) -> list[list[int]]: ...
