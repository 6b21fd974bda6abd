"""WireGuard inside the application: a userspace TCP/IP stack on the wgc device.

The stack takes the TUN's place behind the same data plane (a PacketPort,
wgc/_port.pxd), so keys, handshakes, timers, roaming and allowed-IPs routing
are the daemon's own; programs open TCP and UDP connections through the
tunnel with no TUN, no root and no capabilities.
"""

from wgc.netstack.net import ConfigError, DatagramSocket, Listener, Net

__all__ = ["ConfigError", "DatagramSocket", "Listener", "Net"]
