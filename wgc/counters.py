"""What a wgc device counts, named once: the metrics endpoint, wgc.control and
`wgc --wg show IFACE drops` all read these names, kinds and meanings.

Each event is counted where the decision about it is made: in the data plane
(wgc/_core.pyx, on its thread under Core's mutex: plain increments, no atomics
and no system calls) or in the control plane (wgc/device.py, under the
device's lock).  Device.snapshot() copies them out under those locks; nothing
that reads a snapshot (a scrape, a client) ever holds either.

Names are Prometheus metric names without the "wgc_" prefix the exposition
adds; counters end in _total.  (Plain classes: the daemon does not import
dataclasses, which brings inspect and costs memory it keeps.)
"""
from collections import namedtuple

# kind: "counter" or "gauge"
Figure = namedtuple("Figure", "name kind help")


# Per device: events that belong to no peer, or to a peer not yet known.
DEVICE = (
    Figure("invalid_mac1_total", "counter",
           "Handshake messages dropped for a MAC1 that is not for this device's public key."),
    Figure("cookie_replies_sent_total", "counter",
           "Cookie replies sent instead of an answer while under load."),
    Figure("handshakes_rate_limited_total", "counter",
           "Handshake messages dropped by the per-source rate limiter."),
    Figure("handshake_queue_overflow_total", "counter",
           "Handshake messages dropped because the data plane's queue to the control plane was full."),
    Figure("unknown_receiver_index_total", "counter",
           "Transport messages whose receiver index no session holds."),
    Figure("malformed_packets_total", "counter",
           "UDP datagrams of no WireGuard message type and size."),
    Figure("no_route_total", "counter",
           "Packets from the interface whose destination is in no peer's allowed IPs, or whose peer has no endpoint."),
    Figure("tun_write_failures_total", "counter",
           "Decrypted packets the interface refused to take."),
)

# Per peer: events on a known peer's sessions and traffic.
PEER = (
    Figure("authentication_failures_total", "counter",
           "Transport messages for one of the peer's sessions that failed authentication."),
    Figure("replayed_packets_total", "counter",
           "Authenticated transport messages dropped as replayed or too old for the replay window."),
    Figure("expired_session_packets_total", "counter",
           "Transport messages for a session past Reject-After-Time or Reject-After-Messages."),
    Figure("source_not_allowed_total", "counter",
           "Decrypted packets not from an address in the peer's allowed IPs (or not IP packets)."),
    Figure("staged_overflow_total", "counter",
           "Packets dropped from the queue of packets waiting for a session, as it (or all peers' together) was full."),
    Figure("handshake_initiations_sent_total", "counter",
           "Handshake initiations sent to the peer."),
    Figure("handshake_responses_sent_total", "counter",
           "Handshake responses sent to the peer (initiations answered)."),
    Figure("handshakes_completed_total", "counter",
           "Handshakes completed with the peer, in either role: new sessions."),
    Figure("handshake_rtt_seconds", "gauge",
           "Time from the last initiation this device sent to the peer's response (0 before the first)."),
)


# A copy of one peer's figures: public_key (bytes), endpoint ((host, port) or
# None), allowed_ips ("address/cidr" strings, as wg(8) prints them), rx_bytes,
# tx_bytes, latest_handshake (unix seconds, 0: never), values (by PEER name).
PeerSnapshot = namedtuple("PeerSnapshot", "public_key endpoint allowed_ips rx_bytes tx_bytes latest_handshake values")

# A copy of a device's figures: interface (its name), values (by DEVICE
# name), peers (PeerSnapshots, in the order `get` lists them).
DeviceSnapshot = namedtuple("DeviceSnapshot", "interface values peers")


def format_value(value: float) -> str:
    """A figure as text: an integer in decimal, a float in Python's shortest
    form that reads back the same (0.25, 1e-05), which Python's float() and
    Prometheus's parser (Go's strconv.ParseFloat) both read."""
    return repr(value)
