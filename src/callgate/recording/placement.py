"""Where a leg's packets go on the call's timeline: by RTP timestamp, re-anchored on arrival
time when the two stop agreeing.

A packet's place is its RTP timestamp's distance from its leg's anchor (at first the leg's first
packet, placed at its arrival). That keeps the sender's own spacing — jitter, reordering and
a hold during which the timestamps ran on do not move the audio. But the timestamps are the
sender's: a new SSRC starts a new random timestamp base (RFC 3550 §5.1, §8.2), some phones
resume from hold with the timestamps they stopped at, a broken or hostile one jumps by hours.
Placed by timestamp, such a leg's audio lands far from when it was said (a 2-minute call
exported as hours of silence, up to the 6 h cap) or on top of its own earlier audio.

So each packet's timestamp position is checked against its arrival (the server's clock, relative
to the leg's first packet). Within `BOUND_SECONDS` it is placed by timestamp. Past it, the
packet is placed at its arrival (on the timeline of the run it belongs to, below), whether its
timestamp is ahead — which no packet can honestly be — or late: a packet stamped seconds or
minutes in the past would otherwise land on, and overwrite, what its sender said back then.

- A run of such packets that agree with one another and lasts `CONFIRM_SECONDS` of arrival time,
  with none agreeing with the anchor in between, is a new timeline: the leg is re-anchored at the
  run's first packet's arrival (counted: `reanchors`). The run's packets were placed on that
  timeline from the first one on, so re-anchoring moves nothing already placed.
- A shorter run is a burst of packets late by more than the bound (held back and delivered
  together) or a stray: placed at its arrival all the same.
- A straggler from before the last re-anchor that agrees with the previous anchor goes there.

Every position is therefore within `BOUND_SECONDS` of the packet's arrival, and `Placer` clamps
it there besides (a second line of defence: a position is final when given, nothing moves it
later). So an export is never longer than the recorded wall time plus the bound (and a packet's
own length), and no packet lands more than the bound before its arrival.

Positions are in the codec's RTP clock, relative to the leg's first packet.
"""

from __future__ import annotations

from dataclasses import dataclass

from callgate.recording.chunks import Packet

# Past this, a packet's timestamp and arrival disagree. Above what a live call's own packets are
# late by (a listener's jitter buffer gives up after a few hundred ms; one TCP retransmission on
# a TURN-over-TCP leg, after TCP's initial 1 s RTO, RFC 6298 §2.1, delays a burst ~1 s) and
# above the drift of a real phone's clock (100 ppm, a common crystal's tolerance, drifts 2 s
# in 5.5 h, near the export's 6 h cap); low enough that no leg is further off the timeline.
BOUND_SECONDS = 2.0
# A disagreement that lasts this long (arrival time) is a new timeline, not a burst of late
# packets (those come together, and the burst's last ones agree again). Either way its
# packets are placed at their arrival; re-anchoring decides where the ones after it go.
CONFIRM_SECONDS = 1.0
CONFIRM_PACKETS = 4096  # a longer run, however fast it came, is a new timeline too


def rtp_distance(timestamp: int, reference: int) -> int:
    """Samples from `reference` to `timestamp`, modulo 2^32 and signed (RFC 3550 §5.1: RTP
    timestamps wrap): a packet that arrived after the leg's first one but was sent before it
    (reordered on the way) lies just before it, not 2^32 samples (~25 h) after it."""
    return (timestamp - reference + (1 << 31)) % (1 << 32) - (1 << 31)


@dataclass(frozen=True, slots=True)
class Anchor:
    position: int  # where the packet with `timestamp` goes
    timestamp: int

    def at(self, timestamp: int) -> int:
        return self.position + rtp_distance(timestamp, self.timestamp)


@dataclass(slots=True)
class _Run:
    """Packets that disagree with the anchor and agree with one another (with `anchor`)."""

    anchor: Anchor
    arrival: float  # the first one's
    count: int = 0


class Placer:
    """One leg's positions (codec clock `clock`, relative to its first packet `first`), the
    leg's packets given in arrival order. A position, once given, is final."""

    def __init__(self, first: Packet, clock: int) -> None:
        self._first_arrival = first.arrival
        self._clock = clock
        self._bound = round(BOUND_SECONDS * clock)
        self._anchor = Anchor(0, first.timestamp)
        self._previous: Anchor | None = None
        self._run: _Run | None = None
        self.reanchors = 0
        self.byte_end = 0  # where the payloads end at one sample a byte (G.711)

    def place(self, packet: Packet) -> int:
        """The packet's position (re-anchoring the leg when it confirms a new timeline)."""
        arrived = round((packet.arrival - self._first_arrival) * self._clock)
        position = self._anchor.at(packet.timestamp)
        if abs(arrived - position) <= self._bound:
            self._run = None
            return self._placed(position, arrived, packet)
        previous = self._previous
        if previous is not None and abs(arrived - previous.at(packet.timestamp)) <= self._bound:
            return self._placed(previous.at(packet.timestamp), arrived, packet)
        run = self._run
        if run is None or abs(arrived - run.anchor.at(packet.timestamp)) > self._bound:
            run = self._run = _Run(Anchor(arrived, packet.timestamp), packet.arrival)
        run.count += 1
        if packet.arrival - run.arrival >= CONFIRM_SECONDS or run.count >= CONFIRM_PACKETS:
            self._previous, self._anchor, self._run = self._anchor, run.anchor, None
            self.reanchors += 1
        return self._placed(run.anchor.at(packet.timestamp), arrived, packet)

    def _placed(self, position: int, arrived: int, packet: Packet) -> int:
        position = min(max(position, arrived - self._bound), arrived + self._bound)
        if packet.payload:
            self.byte_end = max(self.byte_end, position + len(packet.payload))
        return position
