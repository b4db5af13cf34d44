"""Detection on a live interface: `ring` reads packets (AF_PACKET TPACKET_V3), `monitor` feeds them
to the same detector as `callgate detect` and prints findings as they appear."""
