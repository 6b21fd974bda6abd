"""Log lines shaped like wireguard-go's, at the level LOG_LEVEL asks for.

    DEBUG: (wg0) 2006/01/02 15:04:05 Interface state was Down, requested Up, now Up
    ERROR: (wg0) 2006/01/02 15:04:05 Failed to create TUN device: ...

Debug lines go to stdout and errors to stderr, as wireguard-go does.
"""
import logging
import os
import sys
import time
import traceback

LEVELS = {"verbose": logging.DEBUG, "debug": logging.DEBUG, "error": logging.ERROR, "silent": logging.CRITICAL + 1}


class _Formatter(logging.Formatter):
    def __init__(self, iface: str):
        super().__init__()
        self.iface = iface

    def format(self, record: logging.LogRecord) -> str:
        kind = "ERROR" if record.levelno >= logging.ERROR else "DEBUG"
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        return f"{kind}: ({self.iface}) {stamp} {record.getMessage()}"


class _BelowError(logging.Filter):
    def filter(self, record):
        return record.levelno < logging.ERROR


def level_from_environment() -> int:
    return LEVELS.get(os.environ.get("LOG_LEVEL", "error").lower(), logging.ERROR)


def make_logger(iface: str, *, stdout: bool = True) -> logging.Logger:
    """The logger for one interface, configured from LOG_LEVEL; with stdout
    False (standard output carries data) every line goes to standard error."""
    logger = logging.getLogger(f"wgc.{iface}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level_from_environment())
    formatter = _Formatter(iface)
    out = logging.StreamHandler(sys.stdout if stdout else sys.stderr)
    out.addFilter(_BelowError())
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.ERROR)
    for handler in (out, err):
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def log_failure(log: logging.Logger, what: str, error: BaseException) -> None:
    """An unexpected exception, without its message, which may quote what a
    client sent (a key, say): its type as an error line, where it happened
    at debug level."""
    log.error("%s: unexpected %s", what, type(error).__name__)
    log.debug("%s", "".join(traceback.format_tb(error.__traceback__)).rstrip())
