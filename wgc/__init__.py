"""wgc: a userspace WireGuard implementation for Linux."""

__version__ = "0.1.0"
