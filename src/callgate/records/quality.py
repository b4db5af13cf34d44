"""Call quality, pure: an estimated MOS from a simplified ITU-T G.107 E-model, and the poor-call rule.

E-model (ITU-T G.107 (06/2015)), with every input at its default except delay and loss:

    R = Ro - Is - Id - Ie,eff + A, and with the defaults Ro - Is = 93.2, A = 0   (G.107 §7.1, §7.3)

- Delay impairment Id from the one-way mouth-to-ear delay Ta (ms), with the usual linearisation of
  G.107's Idd (Cole & Rosenbluth, "Voice over IP performance monitoring", ACM CCR 31(2), 2001):
      Id = 0.024 Ta + 0.11 (Ta - 177.3) H(Ta - 177.3)        (H = step function)
  Ta = RTT/2 (network) + 2 x jitter (a jitter buffer sized at twice the jitter)
       + 20 ms (one Opus frame of packetisation).
- Equipment impairment with loss (G.107 eq. 7-29):
      Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)
  Ppl = packet loss in percent, BurstR = 1 (random loss). G.113 Appendix I has no entry for Opus;
  we take Ie = 0 (wideband-quality codec at 8 kHz-equivalent scale) and Bpl = 10, between G.113's
  G.711 values without PLC (4.3) and with PLC (25.1): Opus conceals loss, but not as well as the
  G.711 Appendix I PLC in the listening tests behind G.113. Documented, not measured.
- MOS (G.107 Annex B, eq. B-4): R < 0 -> 1; R > 100 -> 4.5;
      MOS = 1 + 0.035 R + 7e-6 R (R - 60)(100 - R), clamped to [1, 4.5].

Poor, per stream: loss > 10 %, jitter > 30 ms, RTT > 500 ms, concealed > 7 % (the widely used
enterprise rule; docs/design.md "Records").
"""

from __future__ import annotations

from dataclasses import dataclass

R0 = 93.2
CODEC_DELAY_MS = 20.0
JITTER_BUFFER_FACTOR = 2.0
OPUS_IE = 0.0
OPUS_BPL = 10.0
BURST_RATIO = 1.0

POOR_LOSS = 0.10
POOR_JITTER_MS = 30.0
POOR_RTT_MS = 500.0
POOR_CONCEALED = 0.07

DIRECTIONS = ("inbound", "outbound")


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One stream as a client reports it in `call.stats` (docs/signaling.md).

    inbound: `packets` received and `packets_lost` (RTCP-style, may be negative with duplicates);
    outbound: `packets` sent and `packets_lost` as the far end reported it.
    """

    kind: str
    direction: str
    packets: int
    packets_lost: int
    jitter_ms: float | None = None
    rtt_ms: float | None = None
    concealed_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be inbound or outbound, not {self.direction!r}")
        if self.packets < 0:
            raise ValueError("packets must not be negative")
        for name in ("jitter_ms", "rtt_ms", "concealed_ratio"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a finite non-negative number")

    @property
    def loss_rate(self) -> float:
        """Lost / expected, in [0, 1]."""
        lost = max(0, self.packets_lost)
        expected = self.packets + lost if self.direction == "inbound" else self.packets
        if expected <= 0:
            return 0.0
        return min(1.0, lost / expected)


@dataclass(frozen=True, slots=True)
class Assessment:
    r_factor: float
    mos: float
    classification: str
    poor_reasons: tuple[str, ...]


def one_way_delay_ms(rtt_ms: float, jitter_ms: float) -> float:
    return rtt_ms / 2 + JITTER_BUFFER_FACTOR * jitter_ms + CODEC_DELAY_MS


def delay_impairment(ta_ms: float) -> float:
    excess = ta_ms - 177.3
    return 0.024 * ta_ms + (0.11 * excess if excess > 0 else 0.0)


def loss_impairment(loss_rate: float, ie: float = OPUS_IE, bpl: float = OPUS_BPL) -> float:
    ppl = 100.0 * min(max(loss_rate, 0.0), 1.0)
    return ie + (95.0 - ie) * ppl / (ppl / BURST_RATIO + bpl)


def r_factor(loss_rate: float, rtt_ms: float = 0.0, jitter_ms: float = 0.0) -> float:
    ta = one_way_delay_ms(rtt_ms, jitter_ms)
    return R0 - delay_impairment(ta) - loss_impairment(loss_rate)


def mos_from_r(r: float) -> float:
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    mos = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    return min(4.5, max(1.0, mos))


def poor_reasons(stats: StreamStats) -> tuple[str, ...]:
    reasons = []
    if stats.loss_rate > POOR_LOSS:
        reasons.append("loss")
    if stats.jitter_ms is not None and stats.jitter_ms > POOR_JITTER_MS:
        reasons.append("jitter")
    if stats.rtt_ms is not None and stats.rtt_ms > POOR_RTT_MS:
        reasons.append("rtt")
    if stats.concealed_ratio is not None and stats.concealed_ratio > POOR_CONCEALED:
        reasons.append("concealed")
    return tuple(reasons)


def assess(stats: StreamStats) -> Assessment:
    """E-model MOS (unknown RTT/jitter count as 0) and the good/poor verdict with its reasons."""
    r = r_factor(stats.loss_rate, stats.rtt_ms or 0.0, stats.jitter_ms or 0.0)
    reasons = poor_reasons(stats)
    return Assessment(
        r_factor=round(r, 2),
        mos=round(mos_from_r(r), 2),
        classification="poor" if reasons else "good",
        poor_reasons=reasons,
    )
