"""The naive Bayes voice classifier of Bonfiglio et al., "Revealing Skype Traffic: When Randomness
Plays with You" (SIGCOMM 2007, §3.2), over windows of a flow's packets: pure logic.

The paper's classifier (their NBC) looks at two features of each direction of a flow, per window
of consecutive packets: the size of each message and the gap between messages. Their likelihoods
come from what voice codecs produce — one message per codec frame, so gaps at the codec's frame
duration, and sizes set by the codec's bit rate times its frame duration. A window's *belief* per
feature is the mean log10 likelihood of its messages (sizes) and of its gaps, each gap scored on
its own; a window is voice when each belief is above a per-window threshold, a flow is when its
windows' average beliefs are above a second threshold. The paper combines this decision with its
chi-square classifier (CSC, skype.py) — NBC ∧ CSC — and so does verdict.py: a verdict needs the
randomness test as well.

The parameters are the paper's where its text gives them, else from Tstat, the authors' own tool
(`tstat-conf/avgipg.conf`: per-window threshold -3, average threshold -3.5 in log10, used here for
sizes), else derived here from the codecs and tightened for precision (docs/detection.md, "Classic
Skype" says which is which):

- gaps: a mixture of Gaussians at 20, 30, 40 and 60 ms (sigma 1 ms, equal weights): codec frames of
  20 ms (G.711, G.729 in pairs, iLBC, SILK, Opus), 30 ms (iSAC, iLBC, G.723.1), 40 ms (Opus, or a
  lost 20 ms frame), 60 ms (iSAC, Opus). Tstat's 10 and 50 ms modes and its 2 ms sigma are left
  out: with them a game's ticks (20 Hz = 50 ms, 30 Hz = 33 ms, 60-64 Hz = 16 ms, 128 Hz = 7.8 ms)
  pass for voice. Each gap's log10 likelihood is floored at `GAP_FLOOR` (one late packet must not
  sink a window), a window's mean must reach `GAP_THRESHOLD`: ≈ -1.4 for codec pacing with 1.4 ms
  of jitter, ≤ -3 for any constant gap 3 ms or more off a mode;
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
WIN_THRESHOLD = -3.0  # log10 size belief a window needs (Tstat's WIN_THRESHOLD)
AVG_THRESHOLD = -3.5  # log10 size belief the windows need on average (Tstat's AVG_THRESHOLD)
GAP_THRESHOLD = -2.5  # log10 gap belief a window needs, and the windows on average
GAP_FLOOR = -6.0  # the lowest log10 likelihood one gap scores
MIN_WINDOWS = 2  # a decision needs this many windows
VOICE_SHARE = 0.75  # of the windows that must be voice
GAP_MODES = tuple((0.25, float(ms), 1.0) for ms in (20, 30, 40, 60))  # weight, mean, sigma (ms)
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
    """log10 likelihood of one inter-packet gap, in milliseconds (floored at `GAP_FLOOR`)."""
    return max(math.log10(_mixture(GAP_MODES, gap_ms)), GAP_FLOOR)


class Windows:
    """The windows of one flow, filled one message at a time (`add`); a plain class with slots,
    as `flow.Flow` (one per opaque UDP flow)."""

    __slots__ = ("closed", "count", "gaps", "last", "sizes")

    def __init__(self) -> None:
        self.closed: list[tuple[float, float]] = []  # per window: (size belief, gap belief)
        self.count = [0, 0]  # messages in the open window of each direction
        self.last = [-1.0, -1.0]  # the time of each direction's last message (-1: none yet)
        self.sizes = [0.0, 0.0]  # the sum of the open window's size beliefs
        self.gaps = [0.0, 0.0]  # the sum of its gap beliefs (one per message after the first)

    def add(self, side: int, size: int, ts: float) -> None:
        """One message of `size` payload bytes sent by `side` at `ts` (seconds)."""
        if len(self.closed) >= MAX_WINDOWS:
            return
        if self.last[side] >= 0.0:
            self.gaps[side] += gap_belief(1000.0 * (ts - self.last[side]))
        self.count[side] += 1
        self.last[side] = ts
        self.sizes[side] += size_belief(size)
        if self.count[side] == WINDOW:
            self.closed.append((self.sizes[side] / WINDOW, self.gaps[side] / (WINDOW - 1)))
            self.count[side], self.sizes[side], self.gaps[side] = 0, 0.0, 0.0
            self.last[side] = -1.0  # each window scores its own gaps


def decide(windows: Windows | None) -> str | None:
    """The classifier's verdict on a flow: evidence text when its windows are voice, else None.
    Voice needs `MIN_WINDOWS` windows, `VOICE_SHARE` of them above `WIN_THRESHOLD` (sizes) and
    `GAP_THRESHOLD` (gaps), and the average beliefs above `AVG_THRESHOLD` and `GAP_THRESHOLD`."""
    if windows is None or len(windows.closed) < MIN_WINDOWS:
        return None
    closed = windows.closed
    voice = sum(s >= WIN_THRESHOLD and g >= GAP_THRESHOLD for s, g in closed)
    size = sum(s for s, _ in closed) / len(closed)
    gap = sum(g for _, g in closed) / len(closed)
    if voice < VOICE_SHARE * len(closed) or size < AVG_THRESHOLD or gap < GAP_THRESHOLD:
        return None
    return (
        f"voice by naive Bayes (message size, gap): {voice} of {len(closed)} windows "
        f"of {WINDOW} packets, mean log10 beliefs {size:.1f} / {gap:.1f}"
    )
