"""Python face of wgc/_port.pyx: the packet ports a Core reads and writes."""
from typing_extensions import disjoint_base

@disjoint_base
class PacketPort:
    @property
    def vnet_hdr(self) -> bool: ...
    @property
    def ready_fd(self) -> int: ...

@disjoint_base
class TunPort(PacketPort):
    def __new__(cls, fd: int, *, vnet_hdr: bool = False) -> TunPort: ...

@disjoint_base
class MemoryPort(PacketPort):
    def __new__(cls, *, vnet_hdr: bool = False) -> MemoryPort: ...
    def take_written(self) -> list[bytes]: ...
