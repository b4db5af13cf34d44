"""Two aiortc peers in one process call each other through the relay only.

Both use `iceTransportPolicy="relay"` with the relay under test as their only ICE server, so the
only candidates are relayed ones: the call connects through two allocations on the relay, and the
audio (a 440 Hz tone) crosses it both ways (RTP one way, RTCP and STUN consent both ways).
"""

from __future__ import annotations

import asyncio
import fractions
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)
from aiortc.mediastreams import AudioStreamTrack
from av import AudioFrame

from callgate.records.relay_sessions import DbEventSink
from callgate.storage.db import open_store
from callgate.storage.repositories import RelaySessionRepository
from callgate.types import Transport
from callgate.types.events import EventKind, FanoutSink, ListSink
from tests.conftest import LOOPBACK, PASSWORD, USER, eventually, run_turn_server, server_address
from tests.interop.conftest import Relay, interop_target, run_relay

pytestmark = pytest.mark.interop

FRAMES = 50  # 20 ms each: one second of audio
SAMPLE_RATE = 48000
SAMPLES = 960


class ToneTrack(AudioStreamTrack):
    """A 440 Hz mono tone in 20 ms frames, paced in real time by the base class's clock."""

    def __init__(self) -> None:
        super().__init__()
        self._sample = 0

    async def recv(self) -> AudioFrame:
        silent = await super().recv()  # paces the stream and gives pts/time_base
        t = (np.arange(SAMPLES) + self._sample) / SAMPLE_RATE
        self._sample += SAMPLES
        samples = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = silent.pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


@dataclass
class RecordedRelay(Relay):
    """The relay plus the database its events are recorded in."""

    db_sink: Any = None
    store: Any = None


def configuration(address: tuple[str, int], transport: str) -> RTCConfiguration:
    url = f"turn:{address[0]}:{address[1]}?transport={transport}"
    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=url, username=USER, credential=PASSWORD)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )


def selected_pair(pc: RTCPeerConnection) -> Any:
    """The nominated ICE candidate pair of the (single, bundled) transport."""
    transceiver = pc.getTransceivers()[0]
    ice = transceiver.sender.transport.transport
    pairs = list(ice._connection._nominated.values())
    assert pairs, "no nominated candidate pair"
    return pairs[0]


async def call(address: tuple[str, int], transport: str) -> tuple[int, list[Any]]:
    """Connect two peers over the relay; return audio frames received and the selected pairs."""
    caller = RTCPeerConnection(configuration(address, transport))
    callee = RTCPeerConnection(configuration(address, transport))
    received: list[AudioFrame] = []
    enough = asyncio.Event()

    async def consume(track: MediaStreamTrack) -> None:
        while len(received) < FRAMES:
            frame = await track.recv()
            received.append(frame)
        enough.set()

    tasks: list[asyncio.Task[None]] = []

    @callee.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            tasks.append(asyncio.ensure_future(consume(track)))

    try:
        caller.addTrack(ToneTrack())
        await caller.setLocalDescription(await caller.createOffer())
        for line in caller.localDescription.sdp.splitlines():
            if line.startswith("a=candidate"):
                assert " typ relay" in line, line
        await callee.setRemoteDescription(caller.localDescription)
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(callee.localDescription)

        await asyncio.wait_for(enough.wait(), 15)
        pairs = [selected_pair(caller), selected_pair(callee)]
        return len(received), pairs
    finally:
        for task in tasks:
            task.cancel()
        await caller.close()
        await callee.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_two_aiortc_peers_talk_through_the_relay(
    relay_for_aiortc: RecordedRelay, transport: str
) -> None:
    relay = relay_for_aiortc
    address = relay.tcp if transport == "tcp" else relay.udp
    frames, pairs = await call(address, transport)
    assert frames >= FRAMES
    for pair in pairs:
        assert pair.local_candidate.type == "relay"
        assert pair.remote_candidate.type == "relay"
        assert pair.local_candidate.host == LOOPBACK

    if not relay.is_callgate:
        return
    counters = relay.server.counters
    await eventually(
        lambda: counters.packets_to_peer >= FRAMES and counters.packets_to_client >= FRAMES,
        what=f"relayed packets both ways in {counters}",
    )
    events: list[Any] = relay.events.events
    await eventually(
        lambda: sum(e.kind == EventKind.DELETED for e in events) >= 2, what="two DELETED events"
    )
    created = [e for e in events if e.kind == EventKind.CREATED]
    assert len(created) >= 2
    # The caller's allocation sent the audio towards the callee's relay address, which got it.
    deleted = {e.allocation_id: e for e in events if e.kind == EventKind.DELETED}
    by_relay = {e.relay: deleted[e.allocation_id] for e in created if e.allocation_id in deleted}
    caller_relay = pairs[0].local_candidate
    callee_relay = pairs[1].local_candidate
    sent = by_relay[(caller_relay.host, caller_relay.port)]
    got = by_relay[(callee_relay.host, callee_relay.port)]
    assert sent.packets_to_peer >= FRAMES
    assert got.packets_to_client >= FRAMES
    assert got.packets_to_peer > 0  # RTCP receiver reports and consent checks go back

    # The relay session rows in the database show the same traffic.
    db: DbEventSink = relay.db_sink
    assert await db.aflush()
    rows = {row.allocation_id: row for row in RelaySessionRepository(relay.store.sessions).recent()}
    assert rows[sent.allocation_id].packets_to_peer == sent.packets_to_peer
    assert rows[sent.allocation_id].bytes_to_peer > 0
    assert rows[got.allocation_id].packets_to_client == got.packets_to_client
    assert rows[got.allocation_id].ended_at is not None
    assert rows[got.allocation_id].user == USER
    assert rows[got.allocation_id].transport == transport


@pytest.fixture
async def relay_for_aiortc(tmp_path: Path) -> AsyncIterator[Relay]:
    """The relay with its events also recorded by the database sink into a SQLite file."""
    if interop_target() == "coturn":
        async with run_relay(tmp_path) as relay:
            yield relay
        return
    store = open_store(f"sqlite:///{tmp_path / 'callgate.sqlite3'}")
    db_sink = DbEventSink(store.sessions)
    events = ListSink()
    try:
        async with run_turn_server(events=FanoutSink(events, db_sink)) as server:
            udp = server_address(server, Transport.UDP)
            tcp = server_address(server, Transport.TCP)
            yield RecordedRelay(
                "callgate",
                udp,
                tcp,
                udp,
                tcp,
                server=server,
                events=events,
                db_sink=db_sink,
                store=store,
            )
    finally:
        await db_sink.aclose()
        store.close()
