"""The naive Bayes voice classifier of Bonfiglio et al., "Revealing Skype Traffic: When Randomness
Plays with You" (SIGCOMM 2007, §3.2), over windows of a flow's packets: pure logic.

The paper's classifier (their NBC) looks at two features of each direction of a flow, per window
of consecutive packets: the size of each message and the average inter-packet gap of the window.
Their likelihoods come from what voice codecs produce — one message per codec frame, so gaps at
multiples of 10 ms, and sizes set by the codec's bit rate times its frame duration. A window's
*belief* per feature is log10 of that likelihood; a window is voice when each belief is above a
per-window threshold, a flow is when its windows' average beliefs are above a second threshold.
The paper combines this decision with its chi-square classifier (CSC, skype.py) — NBC ∧ CSC — and
so does verdict.py: a verdict needs the randomness test as well.

The parameters are the paper's where its text gives them, else from Tstat, the authors' own tool
(`tstat-conf/avgipg.conf`: gap modes every 10 ms from 10 to 60 ms, sigma 2 ms; per-window threshold
-3, average threshold -3.5, in log10), else derived here from the codecs (docs/detection.md,
"Classic Skype" says which is which):

- gaps: a mixture of Gaussians at 10, 20, … 60 ms (sigma 2 ms, equal weights): codec frames of 10 ms
  (G.729), 20 ms (G.711, iLBC, SILK, Opus), 30 ms (iSAC, iLBC), 60 ms (iSAC), and bundles;
- sizes: a mixture of Gaussians over what those codecs put in one message — 20-40 bytes (G.729,
  iLBC, SILK at low rates), 60-120 (iSAC, SILK, Opus at speech rates), 160-200 (G.711 20 ms) —
  plus the few bytes of Skype's or RTP's header, so means 32, 90, 170 bytes with sigma 12, 30, 20,
  weights 0.25, 0.5, 0.25;
- windows of `WINDOW` packets per direction (the paper's are longer; detection inspects only a
  flow's first `flow.INSPECT_LIMIT` payloads, so 8 packets give up to 4 windows each way).
"""

from __future__ import annotations

import math

WINDOW = 8  # packets per window, per direction
MAX_WINDOWS = 8  # windows kept per flow (both directions)
WIN_THRESHOLD = -3.0  # log10 belief a window needs, per feature (Tstat's WIN_THRESHOLD)
AVG_THRESHOLD = -3.5  # log10 belief the windows need on average, per feature (AVG_THRESHOLD)
MIN_WINDOWS = 2  # a decision needs this many windows
VOICE_SHARE = 0.75  # of the windows that must be voice
GAP_MODES = tuple(
    (1 / 6, float(ms), 2.0) for ms in (10, 20, 30, 40, 50, 60)
)  # weight, mean, sigma (ms)
SIZE_MODES = (
    (0.25, 32.0, 12.0),
    (0.5, 90.0, 30.0),
    (0.25, 170.0, 20.0),
)  # weight, mean, sigma (bytes)
_FLOOR = 1e-25  # likelihood floor (Tstat's MIN_THRESHOLD): log10 never sees 0


def _mixture(modes: tuple[tuple[float, float, float], ...], x: float) -> float:
    total = 0.0
    for weight, mean, sigma in modes:
        z = (x - mean) / sigma
        total += weight * math.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))
    return max(total, _FLOOR)


def size_belief(size: int) -> float:
    """log10 likelihood of one message of `size` payload bytes."""
    return math.log10(_mixture(SIZE_MODES, float(size)))


def gap_belief(gap_ms: float) -> float:
    """log10 likelihood of a window's average inter-packet gap, in milliseconds."""
    return math.log10(_mixture(GAP_MODES, gap_ms))


class Windows:
    """The windows of one flow, filled one message at a time (`add`); a plain class with slots,
    as `flow.Flow` (one per opaque UDP flow)."""

    __slots__ = ("closed", "count", "first", "last", "sizes")

    def __init__(self) -> None:
        self.closed: list[tuple[float, float]] = []  # per window: (size belief, gap belief)
        self.count = [0, 0]  # messages in the open window of each direction
        self.first = [0.0, 0.0]  # its first message's time
        self.last = [0.0, 0.0]
        self.sizes = [0.0, 0.0]  # the sum of its size beliefs

    def add(self, side: int, size: int, ts: float) -> None:
        """One message of `size` payload bytes sent by `side` at `ts` (seconds)."""
        if len(self.closed) >= MAX_WINDOWS:
            return
        if self.count[side] == 0:
            self.first[side] = ts
        self.count[side] += 1
        self.last[side] = ts
        self.sizes[side] += size_belief(size)
        if self.count[side] == WINDOW:
            gap_ms = 1000.0 * (self.last[side] - self.first[side]) / (WINDOW - 1)
            self.closed.append((self.sizes[side] / WINDOW, gap_belief(gap_ms)))
            self.count[side], self.sizes[side] = 0, 0.0


def decide(windows: Windows | None) -> str | None:
    """The classifier's verdict on a flow: evidence text when its windows are voice, else None.
    Voice needs `MIN_WINDOWS` windows, `VOICE_SHARE` of them above `WIN_THRESHOLD` on both
    features, and both features' average beliefs above `AVG_THRESHOLD`."""
    if windows is None or len(windows.closed) < MIN_WINDOWS:
        return None
    closed = windows.closed
    voice = sum(s >= WIN_THRESHOLD and g >= WIN_THRESHOLD for s, g in closed)
    size = sum(s for s, _ in closed) / len(closed)
    gap = sum(g for _, g in closed) / len(closed)
    if voice < VOICE_SHARE * len(closed) or min(size, gap) < AVG_THRESHOLD:
        return None
    return (
        f"voice by naive Bayes (message size, average gap): {voice} of {len(closed)} windows "
        f"of {WINDOW} packets, mean log10 beliefs {size:.1f} / {gap:.1f}"
    )
