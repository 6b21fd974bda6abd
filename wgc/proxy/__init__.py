"""wgc --proxy: a rootless proxy on the in-process stack (wgc.netstack.Net).

The protocol and configuration modules here do no I/O: bytes go in, events
and the bytes to send come out (socks5, http), and a configuration file's
text becomes frozen dataclasses (config), so that they can be tested and
fuzzed on their own and the asyncio server only moves bytes.
"""
