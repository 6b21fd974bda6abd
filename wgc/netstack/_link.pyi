"""Python face of wgc/netstack/_link.pyx: the stack as the data plane's packet port."""
from typing_extensions import disjoint_base

from wgc._port import PacketPort

@disjoint_base
class StackPort(PacketPort):
    @property
    def wake_fd(self) -> int: ...
    @property
    def inbox_dropped(self) -> int: ...
    def close(self) -> None: ...
