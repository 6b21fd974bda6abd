"""Python face of wgc/_core.pyx: only the class; its Python face is wgc._dataplane.DataPlane."""
from typing_extensions import disjoint_base

@disjoint_base
class Core:
    def __new__(cls, capture: bool = False) -> Core: ...
