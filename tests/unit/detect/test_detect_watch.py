"""`Watch`: what `callgate monitor` prints and `serve` stores each interval — only sessions that are
new or grew, with what they gained; a session whose flows were all evicted is forgotten, and
counted from zero when it comes back."""

from __future__ import annotations

from callgate.detect.engine import Detector, parse_network
from callgate.detect.live.monitor import Watch
from tests.unit.detect.detect_packets import rtp, udp_frame

HOST, PEER = ("10.0.0.5", 40000), ("198.51.100.7", 50000)


def call(detector: Detector, start: int, count: int, peer: tuple[str, int] = PEER) -> None:
    """`count` RTP packets each way between HOST and `peer`, one every 20 ms."""
    for i in range(start, start + count):
        ts = 1000.0 + i * 0.02
        detector.packet(ts, 1, udp_frame(HOST, peer, rtp(i, ssrc=1)))
        detector.packet(ts, 1, udp_frame(peer, HOST, rtp(i, ssrc=2, pt=0)))


def test_only_new_or_grown_sessions_with_what_they_gained() -> None:
    detector = Detector([parse_network("10.0.0.0/8")])
    watch = Watch(detector)
    call(detector, 0, 10)
    (first,) = watch.changes()
    assert (first.session.host, first.session.peer) == ("10.0.0.5", "198.51.100.7")
    assert (first.packets_out, first.packets_in) == (10, 10)
    assert first.targets == ("udp/50000",)  # not known to be p2p: that port only
    watch.commit([first])
    assert watch.changes() == []  # nothing new
    call(detector, 10, 5)
    (grown,) = watch.changes()
    assert (grown.packets_out, grown.packets_in) == (5, 5)
    assert grown.session.packets_out == 15
    # not committed (the database write failed): the next interval offers the same gain again
    (again,) = watch.changes()
    assert (again.packets_out, again.packets_in) == (5, 5)


def test_an_evicted_session_is_forgotten_and_counted_from_zero_when_back() -> None:
    detector = Detector([parse_network("10.0.0.0/8")])
    detector.flows.max_flows = 16
    watch = Watch(detector)
    call(detector, 0, 10)
    watch.commit(watch.changes())
    for i in range(40):  # newer calls push the first one out of the table
        call(detector, 100 + i, 10, peer=(f"198.51.100.{20 + i}", 50000))
        watch.commit(watch.changes())
    assert detector.flows.evicted > 0
    assert len(watch.taken) <= 16  # bounded by the flow table, not by everything ever seen
    assert all(peer != "198.51.100.7" for _, _, peer, _ in watch.taken)
    call(detector, 500, 3)
    back = [c for c in watch.changes() if c.session.peer == "198.51.100.7"]
    assert [(c.packets_out, c.packets_in) for c in back] == [(3, 3)]


def test_new_sessions_are_told_apart_from_grown_ones_for_the_immediate_write() -> None:
    detector = Detector([parse_network("10.0.0.0/8")])
    watch = Watch(detector)
    call(detector, 0, 10)
    changes = watch.changes()
    assert watch.new(changes) == changes  # first seen: written at once
    watch.commit(watch.new(changes))
    call(detector, 10, 5)
    call(detector, 0, 10, peer=("198.51.100.8", 50000))
    changes = watch.changes()
    assert len(changes) == 2
    (new,) = watch.new(changes)
    assert new.session.peer == "198.51.100.8"
    watch.commit([new])
    # the known session's growth was not taken: the interval's update still carries it
    (grown,) = watch.changes()
    assert grown.session.peer == "198.51.100.7" and (grown.packets_out, grown.packets_in) == (5, 5)
