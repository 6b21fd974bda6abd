"""The stack's engine alone (no device behind its port: what it sends goes nowhere)."""
import os
import socket
import threading

import pytest

from wgc.netstack._engine import Engine


@pytest.fixture
def engine():
    e = Engine(["10.0.0.2"], 1420)
    thread = threading.Thread(target=e.run, daemon=True)
    thread.start()
    try:
        yield e
    finally:
        e.stop()
        thread.join(5)


def test_a_held_bridge_is_named_by_a_handle_that_outlives_it_safely(engine):
    """cancel() ends a held connection and its bridge: the status reader
    hears the end, the engine's descriptor is closed (the caller's socket is
    the connection's only one again), and the handle then names nothing:
    resume() and cancel() say so, as they do for a handle never given."""
    mine, client = socket.socketpair()
    status, theirs = socket.socketpair()
    with mine, client, status:
        handle, port = engine.connect(os.dup(mine.fileno()), "10.0.0.2", "10.0.0.1", 80, -1, theirs.detach())
        assert port > 0 and engine.states() == {"SYN_SENT": 1}
        assert not engine.resume(handle + 1) and not engine.cancel(handle + 1)
        assert engine.cancel(handle)
        assert engine.states() == {}
        status.settimeout(5)
        assert status.recv(1) == b""
        mine.close()
        client.settimeout(5)
        assert client.recv(1) == b""
        assert not engine.cancel(handle) and not engine.resume(handle)


def test_a_failed_connect_closes_what_the_engine_was_given(engine):
    """A connection that fails in the call (here, an address that is not
    one): both descriptors handed over are closed."""
    mine, client = socket.socketpair()
    status, theirs = socket.socketpair()
    with mine, client, status:
        with pytest.raises(ValueError):
            engine.connect(os.dup(mine.fileno()), "10.0.0.2", "10.0.0.300", 80, -1, theirs.detach())
        mine.close()
        client.settimeout(5)
        assert client.recv(1) == b""
        status.settimeout(5)
        assert status.recv(1) == b""
