"""The error of every failed control operation, over netlink or the UAPI."""
import os


class WireGuardError(OSError):
    """A failed control operation: `errno` says why, the message says what failed."""

    def __init__(self, errno: int, message: str):
        super().__init__(errno, message)

    def __str__(self) -> str:
        return f"{self.strerror} ({os.strerror(self.errno)})"
