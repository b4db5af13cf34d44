"""RFC 3261's transaction timers (§17.1.1.1, §13.3.1.4), the edge's everywhere it retransmits."""

T1, T2 = 0.5, 4.0  # s: the round-trip estimate, the longest retransmission interval
TIMEOUT = 64 * T1  # s: how long a request or a 2xx is retransmitted (Timers B, F, H, §13.3.1.4)
