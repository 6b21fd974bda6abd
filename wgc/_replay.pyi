"""Python face of wgc/_replay.pyx, for tests."""
from typing_extensions import disjoint_base

WINDOW: int
REJECT_AFTER: int

@disjoint_base
class ReplayFilter:
    def reset(self) -> None: ...
    def accept(self, counter: int) -> bool: ...
