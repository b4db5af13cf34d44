"""A call to a number under a recording rule (runtime/sip_recorded.py), with a real recording
service and store, without sockets: no recorder or no room means the carrier is not called
(RecordingFailure before it), the caller's first packets must be on disk first, and a callee
that goes silent after the answer fails the recording, which is what ends the call
`recording-failed` (the call handlers wait on `failed`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from callgate.media.anchor import Bridge
from callgate.recording.recorder import RecorderLimits
from callgate.recording.service import RecordingService, RecordingSettings
from callgate.recording.store import RecordingRepository
from callgate.recording.writer import RecordingFailure
from callgate.runtime.sip_recorded import NumberRecording
from callgate.storage.db import Store
from tests.unit.recording.test_recorder import packet


def service(store: Store, tmp_path: Path) -> RecordingService:
    settings = RecordingSettings(
        directory=tmp_path / "rec",
        key_file=tmp_path / "keys" / "master.key",
        min_free_bytes=0,
        max_active=1,
        limits=RecorderLimits(0.05, 0.5),  # flush every 50 ms; 0.5 s of silence fails
    )
    return RecordingService(RecordingRepository(store), settings, {})


async def test_a_number_call_is_recorded_or_stopped(store: Store, tmp_path: Path) -> None:
    with pytest.raises(RecordingFailure, match="no recorder"):
        await NumberRecording(None).start("a" * 32, "alice", "d1", "+442079460000", None, "pcmu")

    recordings = service(store, tmp_path)
    call = NumberRecording(recordings)
    await call.start("b" * 32, "alice", "alice.desk", "+442079460000", "4:record", "pcmu")
    # nothing from the caller yet: the carrier must not be called
    with pytest.raises(RecordingFailure, match="no media from the caller"):
        await call.caller_written(0.3)
    # the recorder is full (recording.max_active = 1): a second call is refused before the
    # carrier is called
    with pytest.raises(RecordingFailure, match="being recorded already"):
        await NumberRecording(recordings).start("c" * 32, "bob", None, "+1555", None, "pcmu")

    for seq in range(3):
        call.on_packet(packet("caller", seq))
    await call.caller_written(30)  # on disk: now the carrier may be called
    call.answered(Bridge(lambda: []), "pcmu")  # the carrier answered, and then sends nothing
    for seq in range(3, 500):  # the caller goes on talking
        call.on_packet(packet("caller", seq))
        if call.failed.is_set():
            break
        await asyncio.sleep(0.02)
    assert call.failed.is_set() and "no media from the callee" in call.failure
    await call.close()
    (row,) = RecordingRepository(store).for_call("b" * 32)
    assert row.state == "failed" and row.policy_rule == "4:record"
    assert row.metadata["participants"][1] == {"id": "callee", "number": "+442079460000"}
