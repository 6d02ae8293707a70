"""Handshake layer: state machines, flights, retransmission, fragmentation, reassembly."""
