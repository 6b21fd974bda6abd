"""wgc/netstack/_ip.pyx has no Python face: only C functions for the other compiled modules."""
