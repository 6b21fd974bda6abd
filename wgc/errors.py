"""The error of every failed control operation, over netlink or the UAPI."""
import os
from errno import EIO


class WireGuardError(OSError):
    """A failed control operation: `errno` says why, the message says what failed."""

    def __init__(self, errno: int | None, message: str):
        # An OSError passed on may lack an errno (typeshed says so; system calls set one): EIO then.
        super().__init__(errno or EIO, message)

    def __str__(self) -> str:
        return f"{self.strerror} ({os.strerror(self.errno or EIO)})"
