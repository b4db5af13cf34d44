"""A leg whose RTP timestamps stop following the clock is exported where it was said, not
where its timestamps claim: a jump of an hour either way, a new SSRC (a new random timestamp
base, RFC 3550 §8.2), a phone back from hold with the timestamps it stopped at, a clock that
drifts. Before, a +1 h jump exported an hour of silence and a backwards one lost the audio; the
export is never longer than the recorded wall time plus the bound."""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

from callgate.recording.audio import RATE, render, stereo_wav_bytes
from callgate.recording.chunks import Packet
from callgate.recording.codecs import G722, OPUS, PCMU
from callgate.recording.placement import BOUND_SECONDS, Placer, rtp_distance
from tests.unit.recording.test_audio import g711, g722, opus_tone, peak_hz, random_call, read

HOUR = 3600
Samples = npt.NDArray[np.float64]
SLACK = 0.13  # a packet's own length (at most 120 ms) and the resampler's edges


def tone(codec: str, hz: float) -> list[bytes]:
    """One second of `hz` as 50 payloads of 20 ms (sent over and over)."""
    if codec == G722:
        return [g722(hz, n * 320) for n in range(50)]
    return opus_tone(hz, 50) if codec == OPUS else [g711(codec, hz, n * 160) for n in range(50)]


def run(
    leg: str,
    codec: str,
    hz: float,
    sent: tuple[float, float],
    timestamp: float,
    seq: int = 0,
    pace: float = 1.0,
) -> list[Packet]:
    """Packets of `hz` sent from `sent[0]` to `sent[1]` s of the call (20 ms each), the first
    stamped as if `timestamp` seconds of the sender's clock had passed, arriving when sent.
    `pace` > 1: the sender's clock runs that much fast (its 20 ms of
    samples take 20 ms / pace of real time)."""
    clock = RATE if codec == OPUS else 8000
    step, payloads = clock // 50, tone(codec, hz)
    count = round((sent[1] - sent[0]) * 50 * pace)
    first = round(timestamp * clock)
    return [
        Packet(
            leg,
            (seq + n) % 65536,
            (first + n * step) % (1 << 32),
            1000.0 + sent[0] + n * 0.02 / pace,
            payloads[n % 50],
        )
        for n in range(count)
    ]


def export(packets: list[Packet], codec: str) -> tuple[Samples, float, dict[str, int]]:
    """The WAV's samples, its length (checked against the bound) and the re-anchorings."""
    rendered = render(lambda: iter(packets), codec, lambda block: None)
    wall = max(p.arrival for p in packets) - min(p.arrival for p in packets)
    assert rendered.seconds <= wall + BOUND_SECONDS + SLACK, (rendered.seconds, wall)
    data, seconds = stereo_wav_bytes(packets, codec)
    assert seconds == rendered.seconds
    return read(data), seconds, rendered.reanchors


def hz_at(samples: Samples, channel: int, start: float, end: float) -> float:
    return peak_hz(samples[round(start * RATE) : round(end * RATE), channel])


def silent(samples: Samples, channel: int, start: float, end: float) -> bool:
    return bool(np.abs(samples[round(start * RATE) : round(end * RATE), channel]).max() == 0)


def arrived(packets: list[Packet]) -> list[Packet]:
    return sorted(packets, key=lambda p: p.arrival)


@pytest.mark.parametrize("codec", [OPUS, PCMU])
@pytest.mark.parametrize("jump", [HOUR, -HOUR])
def test_a_leg_that_jumps_an_hour_is_placed_where_it_spoke(codec: str, jump: int) -> None:
    # the caller speaks 0-2 s, pauses, speaks again (660 Hz) 3-5 s stamped an hour off; the callee
    # speaks throughout. Before: +1 h exported an hour of silence, -1 h lost the second part.
    base = 0xFFFF_0000 / (RATE if codec == OPUS else 8000)  # the timestamps wrap meanwhile
    packets = arrived(
        run("caller", codec, 440, (0, 2), base)
        + run("caller", codec, 660, (3, 5), base + 3 + jump, seq=100)
        + run("callee", codec, 880, (0.01, 5), 12.0)
    )
    samples, seconds, reanchors = export(packets, codec)
    assert seconds == pytest.approx(5.0, abs=SLACK)
    assert reanchors == {"caller": 1, "callee": 0}
    assert abs(hz_at(samples, 0, 0.1, 1.9) - 440) < 5
    assert silent(samples, 0, 2.1, 2.9)
    assert abs(hz_at(samples, 0, 3.1, 4.9) - 660) < 5
    assert abs(hz_at(samples, 1, 0.1, 4.9) - 880) < 5


def test_a_new_ssrc_and_a_phone_back_from_hold_are_placed_on_arrival() -> None:
    # The caller's stream restarts mid-sentence with a new SSRC: new random timestamp and
    # sequence bases, no pause. The callee's phone goes on hold for 5 s and resumes with the
    # timestamps it stopped at (placed by them, its 660 Hz would cover 2-4 s, 5 s early).
    packets = arrived(
        run("caller", OPUS, 440, (0, 2.5), 7.0)
        + run("caller", OPUS, 660, (2.5, 5), 0x9E37_79B9 / RATE, seq=40000)
        + run("callee", OPUS, 880, (0, 2), 100.0)
        + run("callee", OPUS, 660, (7, 9), 102.0, seq=100)
    )
    samples, seconds, reanchors = export(packets, OPUS)
    assert seconds == pytest.approx(9.0, abs=SLACK)
    assert reanchors == {"caller": 1, "callee": 1}
    assert abs(hz_at(samples, 0, 0.1, 2.4) - 440) < 5
    assert abs(hz_at(samples, 0, 2.6, 4.9) - 660) < 5
    assert abs(hz_at(samples, 1, 0.1, 1.9) - 880) < 5
    assert silent(samples, 1, 2.1, 6.9)
    assert abs(hz_at(samples, 1, 7.1, 8.9) - 660) < 5


def test_a_drifting_clock_is_followed_within_the_bound_then_re_anchored() -> None:
    # The callee's clock runs 3 % fast: after 30 s its timestamps are 0.9 s ahead, within the
    # bound, so its audio keeps its own spacing. The caller's runs 10 % fast: 2 s ahead after
    # 20 s, where it is re-anchored once; its switch to 660 Hz, sent at 25 s, is then found
    # at ~25.5 s, not at 27.5 s (25 s of a 10 % fast clock).
    packets = arrived(
        run("caller", OPUS, 440, (0, 25), 0.0, pace=1.1)
        + run("caller", OPUS, 660, (25, 30), 27.5, seq=2750, pace=1.1)
        + run("callee", OPUS, 880, (0, 30), 50.0, pace=1.03)
    )
    samples, seconds, reanchors = export(packets, OPUS)
    assert reanchors == {"caller": 1, "callee": 0}
    assert seconds == pytest.approx(30 * 1.03, abs=SLACK)  # the callee, by its timestamps
    assert abs(hz_at(samples, 0, 23.5, 24.9) - 440) < 5
    assert abs(hz_at(samples, 0, 25.8, 27.2) - 660) < 5
    assert abs(hz_at(samples, 1, 0.1, 30.8) - 880) < 5


def test_a_burst_of_late_packets_is_placed_as_sent_not_re_anchored() -> None:
    # A TURN-over-TCP leg stalls: what it sent from 2 s to 3.8 s arrives at once at 3.8 s (the
    # first 1.8 s late: within the bound), then it flows again. The burst is placed by its
    # timestamps: the export is the one of the same packets arriving on time.
    on_time = run("caller", OPUS, 440, (0, 7), 3.0)
    stalled = [p if not 2 <= p.arrival - 1000 < 3.8 else
               Packet(p.leg, p.seq, p.timestamp, 1003.8 + p.seq * 1e-5, p.payload)
               for p in on_time]  # fmt: skip
    _, seconds, reanchors = export(stalled, OPUS)
    assert reanchors == {"caller": 0}
    assert seconds == pytest.approx(7.0, abs=SLACK)
    assert stereo_wav_bytes(stalled, OPUS) == stereo_wav_bytes(on_time, OPUS)


@pytest.mark.parametrize("codec", [OPUS, PCMU])
def test_hostile_timestamps_never_make_the_export_longer_than_the_call(codec: str) -> None:
    # a sender that stamps packets anywhere: alternating an hour apart, then at random
    rng = random.Random(7)
    packets = run("caller", codec, 440, (0, 4), 0.0) + run("callee", codec, 880, (0, 4), 0.0)
    hostile = []
    for n, p in enumerate(packets):
        if p.leg == "caller" and n % 2:
            p = Packet(p.leg, p.seq, (p.timestamp + HOUR * RATE) % (1 << 32), p.arrival, p.payload)
        elif p.leg == "callee" and rng.random() < 0.3:
            p = Packet(p.leg, p.seq, rng.randrange(1 << 32), p.arrival, p.payload)
        hostile.append(p)
    _, seconds, _ = export(arrived(hostile), codec)  # its length checked against the bound
    assert seconds == pytest.approx(4.0, abs=SLACK)


def stamped_on(packets: list[Packet], codec: str, timeline: float, leg: str = "") -> list[Packet]:
    """`packets` again, each 10 ms after it, stamped on the timeline whose timestamp at `sent`
    seconds of the call is `sent + timeline` (a straggler of an earlier timeline)."""
    clock = RATE if codec == OPUS else 8000
    return [
        Packet(leg or p.leg, p.seq, round((p.arrival + 0.01 - 1000 + timeline) * clock) % (1 << 32),
               p.arrival + 0.01, p.payload)
        for p in packets
    ]  # fmt: skip


def alone(packets: list[Packet], codec: str, leg: str) -> Samples:
    """The export of `leg`'s packets without the other leg's."""
    data, _ = stereo_wav_bytes([p for p in packets if p.leg == leg], codec)
    return read(data)


def three_timelines(codec: str, caller_seconds: float) -> list[Packet]:
    """The caller's 440 Hz, steady; the callee speaks 2 s on one timeline (T0), 1.2 s on a
    second (T1, a new SSRC: one re-anchoring), then 1.2 s stamped 5 h behind its arrival (T2)
    with a packet stamped on T0 after each of those, then goes quiet."""
    t2 = run("callee", codec, 550, (3.21, 4.41), 3.21 - 5 * HOUR, seq=400)
    return arrived(
        run("caller", codec, 440, (0, caller_seconds), 0.0)
        + run("callee", codec, 880, (0.01, 2.01), 50.0 + 0.01)
        + run("callee", codec, 660, (2.01, 3.21), 7000.0, seq=200)
        + t2
        + stamped_on(t2, codec, 50.0)
    )


@pytest.mark.parametrize("codec", [OPUS, PCMU])
def test_stragglers_of_an_older_timeline_are_not_moved_with_a_new_one(codec: str) -> None:
    # The stragglers agree with the anchor before last and are placed by it; when T2's run was
    # confirmed, they were moved with it, 5 h ahead: the 4.4 s call exported as 18,004 s.
    samples, seconds, reanchors = export(three_timelines(codec, 4.4), codec)
    assert seconds == pytest.approx(4.4, abs=SLACK)
    assert reanchors["callee"] == 2
    assert abs(hz_at(samples, 1, 0.1, 1.9) - 880) < 5
    assert abs(hz_at(samples, 1, 2.1, 3.1) - 660) < 5


def test_a_hostile_leg_gone_quiet_does_not_push_the_other_out_of_the_export() -> None:
    # After its three timelines the callee goes quiet for longer than the reorder buffer waits:
    # a straggler moved 5 h ahead was decoded mid-call and moved the held window there, and
    # the caller's audio after it was dropped (of 60 s, 3.7 s were left).
    packets = three_timelines(PCMU, 60)
    samples, seconds, _ = export(packets, PCMU)
    assert seconds == pytest.approx(60.0, abs=SLACK)
    caller = alone(packets, PCMU, "caller")
    assert np.array_equal(samples[: len(caller), 0], caller[:, 0])  # all of it, unchanged


def hostile_callee(rng: random.Random, codec: str, seconds: float) -> list[Packet]:
    """A callee that speaks in stretches, each on a new timeline (anywhere, or hours behind or
    ahead of its arrival) or an earlier one, with pauses (some longer than the reorder buffer
    waits), now and then with stragglers between its packets: mostly of the timeline it was
    re-anchored from last (`anchors`: as a stretch of over 1 s on a new timeline re-anchors it),
    else of any earlier one."""
    anchors: list[float] = []
    packets: list[Packet] = []
    at = 0.01
    while at < seconds - 0.5:
        if rng.random() < 0.3:
            at += rng.choice([rng.uniform(0.1, 2.0), rng.uniform(5.5, 8.0)])  # a pause
        end = min(seconds, at + rng.uniform(0.3, 3.0))
        kind = rng.random()
        if kind < 0.2 or not anchors:
            timeline = rng.choice(anchors or [rng.uniform(0, 1000)])
        elif kind < 0.6:
            timeline = rng.choice([-1, 1]) * rng.uniform(1, 6) * HOUR
        else:
            timeline = rng.uniform(0, (1 << 32) / (RATE if codec == OPUS else 8000))
        stretch = run("callee", codec, rng.choice([660, 880]), (at, end), at + timeline,
                      seq=len(packets))  # fmt: skip
        packets += stretch
        anchors = anchors or [timeline]
        stragglers = None
        if len(anchors) > 1 and rng.random() < 0.7:
            stragglers = anchors[-2] if rng.random() < 0.8 else rng.choice(anchors)
            packets += stamped_on(stretch, codec, stragglers)
        new = all(abs(timeline - anchor) > 2 for anchor in anchors[-2:])
        if end - at > 1.1 and new and stragglers in (None, *anchors[-2:-1]):
            anchors.append(timeline)
        at = end
    return packets


@pytest.mark.parametrize("seed", range(8))
def test_random_hostile_timestamps_keep_the_export_short_and_the_other_leg_whole(
    seed: int,
) -> None:
    rng = random.Random(seed)
    codec = [OPUS, PCMU, G722][seed % 3]
    seconds = rng.uniform(12, 20)
    packets = arrived(
        run("caller", codec, 440, (0, seconds), rng.uniform(0, 1000))
        + hostile_callee(rng, codec, seconds)
    )
    samples, _, _ = export(packets, codec)  # its length checked against the bound
    caller = alone(packets, codec, "caller")
    assert np.array_equal(samples[: len(caller), 0], caller[:, 0])


@pytest.mark.parametrize("codec", [OPUS, PCMU])
def test_packets_stamped_far_in_the_past_do_not_overwrite_what_was_said(codec: str) -> None:
    # The caller says 440 Hz for 10 s; from 6 s on, between its packets, it sends 660 Hz ones
    # stamped 5 s back. Placed by their timestamps they overwrote 1-5 s of what it had said;
    # they are placed where they came, over its own audio of that time.
    said = run("caller", codec, 440, (0, 10), 0.0)
    rewrite = stamped_on(run("caller", codec, 660, (5.99, 9.99), 0.0), codec, -5.0)
    packets = arrived(said + rewrite + run("callee", codec, 880, (0.01, 10), 0.0))
    samples, seconds, reanchors = export(packets, codec)
    assert seconds == pytest.approx(10.0, abs=SLACK)
    assert reanchors == {"caller": 0, "callee": 0}
    caller = alone(said, codec, "caller")
    assert np.array_equal(samples[: 6 * RATE - 960, 0], caller[: 6 * RATE - 960, 0])


@pytest.mark.parametrize("seed", range(16))
def test_a_normal_call_is_placed_by_its_timestamps_alone(seed: int) -> None:
    # what networks and phones do (late joins, holds, loss, duplicates, reordering, a clock
    # 3 % fast): every packet goes where its timestamp says, so the WAV's bytes are the ones
    # placing by timestamp gave
    codec, packets = random_call(seed)
    if seed % 2:
        caller = [p for p in packets if p.leg == "caller"]
        packets = arrived(caller + run("callee", codec, 880, (0, 20), 7.0, pace=1.03))
    clock = RATE if codec == OPUS else 8000
    for leg in ("caller", "callee"):
        own = [p for p in packets if p.leg == leg]
        if own:
            placer = Placer(own[0], clock)
            placed = [placer.place(p) for p in own]
            assert placed == [rtp_distance(p.timestamp, own[0].timestamp) for p in own]
            assert placer.reanchors == 0
