"""Compliance recording end to end: `callgate serve` with a recording-required rule for alice →
bob, and two `callgate` CLI processes (aiortc) as the parties.

The caller plays 440 Hz, the callee 880 Hz. The call must connect through the server's anchor,
both parties must be told it is recorded (and hear the operator's announcement,
`recording.prompt_file`, not the beeps), and the exported bundle must hold the caller in the
left channel and the callee in the right, and verify offline. With the recorder unavailable the
callee never rings; with the recording disk filling mid-call the call ends `recording-failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callgate.recording.chunks import ChunkError, iter_chunks
from callgate.storage.models import Recording
from tests.e2e.helpers import (
    Serve,
    callgate,
    final_cdr,
    finish,
    http_json,
    login,
    new_serve,
    password_of,
    read_event,
    rows_of,
    start_cli,
    wait_for,
)
from tests.e2e.small_disk import fill, mounted_tmpfs

CALLER_HZ, CALLEE_HZ = 440.0, 880.0
FAST = {
    "CALLGATE_RECORDING__MIN_FREE_MB": "0",
    "CALLGATE_RECORDING__FLUSH_INTERVAL_S": "0.25",
    # the relay admits only the parties of live calls, and a call's anchor to its parties
    "CALLGATE_TURN__CALL_BOUND": "true",
    # both parties hear the beeps when the call connects; the recording is still only theirs
    "CALLGATE_RECORDING__PROMPT": "true",
}
ANNOUNCEMENT_HZ = 600.0  # the operator's announcement (recording.prompt_file) in the main test


def write_announcement(path: Path, hz: float = ANNOUNCEMENT_HZ) -> Path:
    """1.2 s of `hz` as a 16 kHz stereo 16-bit WAV, as an operator might supply it."""
    import wave

    import numpy as np

    rate = 16000
    tone = (8000 * np.sin(2 * np.pi * hz * np.arange(int(rate * 1.2)) / rate)).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.repeat(tone, 2).tobytes())
    return path


def heard_peaks(path: Path) -> list[float]:
    """The loudest frequency of each 100 ms of a party's `--record` file (48 kHz mono)."""
    import wave

    import numpy as np

    with wave.open(str(path), "rb") as reader:
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    step = rate // 10
    windows = [
        samples[i : i + step].astype(np.float64) for i in range(0, len(samples) - step, step)
    ]
    return [channel_peak(w, rate) for w in windows if np.abs(w).max() > 500]


def add_rule(server: Serve) -> None:
    added = server.cli("user", "add", "cleo", "--role", "compliance", "--password-stdin",
                       stdin=password_of("cleo") + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    result = server.cli(
        "policy", "add", "record-alice", "allow", "--from-user", "alice", "--to-user", "bob",
        "--recording-required",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture
def recording_serve(tmp_path: Path, user_template: Path) -> Iterator[Serve]:
    announcement = write_announcement(tmp_path / "announcement.wav")
    server = new_serve(tmp_path / "srv", template=user_template, **FAST,
                       CALLGATE_RECORDING__PROMPT_FILE=str(announcement))  # fmt: skip
    add_rule(server)
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


def read_stereo(path: Path) -> tuple[Any, int]:
    import wave

    import numpy as np

    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (2, 2)
        frames = reader.readframes(reader.getnframes())
        rate = reader.getframerate()
    return np.frombuffer(frames, dtype=np.int16).reshape(-1, 2).astype(np.float64), rate


def channel_peak(samples: Any, rate: int) -> float:
    import numpy as np

    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


async def recorded_call(
    server: Serve, tmp: Path, duration: float = 3.0, heard: Path | None = None
) -> tuple[list[Any], list[Any]]:
    """alice calls bob; with `heard`, each writes what it receives to heard/NAME.wav."""
    bob_events: list[dict[str, Any]] = []
    bob_record = ("--record", str(heard / "bob.wav")) if heard else ()
    alice_record = ("--record", str(heard / "alice.wav")) if heard else ()
    bob = await start_cli(
        server, "bob", "answer", "--count", "1", "--tone", str(CALLEE_HZ), *bob_record,
        config_dir=tmp,
    )  # fmt: skip
    await read_event(bob, "ready", 60, bob_events)
    alice = await start_cli(
        server, "alice", "call", "bob", "--tone", str(CALLER_HZ), "--duration", str(duration),
        *alice_record, config_dir=tmp,
    )  # fmt: skip
    _, alice_events, alice_err = await finish(alice, [], timeout=60)
    _, bob_events, bob_err = await finish(bob, bob_events, timeout=60)
    alice_events.append({"event": "stderr", "text": alice_err[-2000:]})
    bob_events.append({"event": "stderr", "text": bob_err[-2000:]})
    return alice_events[:-1], bob_events[:-1]


@pytest.mark.timeout(180)
async def test_a_recorded_call_is_anchored_recorded_and_exports_a_verifiable_bundle(
    recording_serve: Serve, tmp_path: Path
) -> None:
    server = recording_serve
    alice_events, bob_events = await recorded_call(server, tmp_path, heard=tmp_path)

    names = [e["event"] for e in alice_events]
    assert "recording" in names and "connected" in names, alice_events
    assert names.index("recording") < names.index("ringing") < names.index("answered"), names
    assert alice_events[-1]["reason"] == "hangup", alice_events
    assert "recording" in [e["event"] for e in bob_events], bob_events
    for event in (*alice_events, *bob_events):
        if event["event"] == "connected":  # each party's far end is the anchor, via our relay
            assert (event["local_candidate_type"], event["remote_candidate_type"]) == (
                "relay",
                "relay",
            ), event
    call_id = alice_events[0]["call_id"]
    # both legs took the in-process handoff with the server's own relay (docs/recording.md)
    for leg in ("caller", "callee"):
        assert f"leg {leg}: packets to and from the relay in-process" in server.log()
    assert f"call {call_id}: recording prompt played to both parties" in server.log()
    # each party heard the operator's announcement (not the beeps), then the other party
    for name, other_hz in (("alice", CALLEE_HZ), ("bob", CALLER_HZ)):
        peaks = heard_peaks(tmp_path / f"{name}.wav")
        announced = [i for i, hz in enumerate(peaks) if abs(hz - ANNOUNCEMENT_HZ) < 15]
        talk = [i for i, hz in enumerate(peaks) if abs(hz - other_hz) < 15]
        assert len(announced) >= 8 and talk and talk[-1] > announced[-1], (name, peaks)
        assert not any(abs(hz - 1400.0) < 15 for hz in peaks), (name, peaks)
    cdr = await final_cdr(server.database, call_id)
    assert (cdr["anchored"], cdr["recording_required"]) == (True, True)
    assert (cdr["disposition"], cdr["reason"]) == ("answered", "hangup")

    row = await closed_recording(server, call_id)
    assert row["state"] == "closed" and row["chunks"] >= 4 and row["sha256"], row
    assert json.loads(cdr["recording_ids"]) == [row["recording_id"]]
    # the caller's media was being recorded before bob's phone rang
    streams = {s["label"]: s for s in json.loads(row["metadata_json"])["streams"]}
    assert streams["caller"]["first_arrival"] < cdr["ring_at"].timestamp()
    assert streams["caller"]["packets"] > 100 and streams["callee"]["packets"] > 100, streams

    await check_api(server, row["recording_id"], call_id)
    listed = server.cli("recording", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["call_id"] for r in json.loads(listed.stdout)] == [call_id]
    shown = json.loads(server.cli("recording", "show", call_id, "--json").stdout)
    assert shown["recording_id"] == row["recording_id"] and "wrapped_key" not in shown
    parties = {p["id"]: p["handle"] for p in shown["metadata"]["participants"]}
    assert parties == {"caller": "alice", "callee": "bob"}
    # the same through the API, as the compliance officer; bob is refused
    remote = callgate(
        "recording", "show", call_id, "--json", "--server", server.url, "--user", "cleo",
        CALLGATE_ADMIN_PASSWORD=password_of("cleo"),
    )  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout)["metadata"] == shown["metadata"]
    refused = callgate(
        "recording", "list", "--server", server.url, "--user", "bob",
        CALLGATE_ADMIN_PASSWORD=password_of("bob"),
    )  # fmt: skip
    assert refused.returncode == 1 and "'bob'" in refused.stderr, refused.stderr

    bundle = tmp_path / "bundle"
    export = server.cli("recording", "export", call_id, "--out", str(bundle))
    assert export.returncode == 0, export.stderr
    samples, rate = read_stereo(bundle / "audio.wav")
    talk = samples[rate : -rate // 2]  # a second in: both talk by then
    assert abs(channel_peak(talk[:, 0], rate) - CALLER_HZ) < 5.0
    assert abs(channel_peak(talk[:, 1], rate) - CALLEE_HZ) < 5.0

    verify = callgate("recording", "verify", str(bundle))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "OK" in verify.stdout

    # one flipped byte in the third chunk: verify names it
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    data = bytearray((tampered / "recording.cgrec").read_bytes())
    offsets = chunk_offsets(bytes(data))
    data[offsets[2] + 40] ^= 0x01
    (tampered / "recording.cgrec").write_bytes(bytes(data))
    verify = callgate("recording", "verify", str(tampered))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "chunk 2" in verify.stdout + verify.stderr


async def check_api(server: Serve, recording_id: str, call_id: str) -> None:
    """Compliance reads the recording and fetches a range of its audio; bob (a plain user, and
    a party of the call) is refused with 403; the refusal and the playback are audited."""
    cleo, bob = await login(server, "cleo"), await login(server, "bob")
    status, listed = http_json(f"{server.url}/api/recordings", token=cleo)
    items = listed["items"]
    assert status == 200 and [r["recording_id"] for r in items] == [recording_id], listed
    assert "wrapped_key" not in items[0] and listed["next_cursor"] is None
    status, one = http_json(f"{server.url}/api/recordings/{recording_id}", token=cleo)
    assert status == 200 and one["metadata"]["session"]["call_id"] == call_id
    request = urllib.request.Request(
        f"{server.url}/api/recordings/{recording_id}/audio",
        headers={"Authorization": f"Bearer {cleo}", "Range": "bytes=0-43"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 206
        assert response.headers["Content-Range"].startswith("bytes 0-43/")
        header = response.read()
    assert header[:4] == b"RIFF" and header[8:12] == b"WAVE" and len(header) == 44
    status, refused = http_json(f"{server.url}/api/recordings/{recording_id}", token=bob)
    assert status == 403, refused
    audit = server.cli("audit", "list", "--json", "--limit", "50")
    actions = [(e["actor"], e["action"]) for e in map(json.loads, audit.stdout.splitlines())]
    assert ("bob", "recording.access_denied") in actions, actions
    assert ("cleo", "recording.played") in actions, actions


async def closed_recording(server: Serve, call_id: str) -> dict[str, Any]:
    """The call's recording row once it is no longer open (it closes just after the call)."""

    def closed() -> dict[str, Any] | None:
        rows = rows_of(server.database, Recording.__table__, Recording.call_id == call_id)
        return rows[0] if len(rows) == 1 and rows[0]["state"] != "open" else None

    found: dict[str, Any] = await wait_for(closed, 60, f"call {call_id}'s recording closed")
    return found


def chunk_offsets(data: bytes) -> list[int]:
    from callgate.recording.chunks import HEADER_BYTES, iter_chunks

    offsets, at = [], HEADER_BYTES
    for chunk in iter_chunks(data):
        offsets.append(at)
        at += len(chunk.raw)
    return offsets


@pytest.mark.timeout(180)  # CLI softphones start slowly on a loaded machine
async def test_with_the_recorder_unavailable_the_callee_never_rings(
    tmp_path: Path, user_template: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the recordings directory should be\n")
    server = new_serve(
        tmp_path / "srv", template=user_template,
        CALLGATE_RECORDING__DIRECTORY=str(blocked / "recordings"), **FAST,
    )  # fmt: skip
    add_rule(server)
    server.start()
    try:
        bob_events: list[dict[str, Any]] = []
        bob = await start_cli(server, "bob", "answer", "--count", "1", config_dir=tmp_path)
        await read_event(bob, "ready", 60, bob_events)
        alice = await start_cli(
            server, "alice", "call", "bob", "--tone", "440", "--duration", "2",
            config_dir=tmp_path,
        )  # fmt: skip
        _, alice_events, _ = await finish(alice, [], timeout=60)
        bob.terminate()
        _, bob_events, _ = await finish(bob, bob_events, timeout=60)
    finally:
        assert server.stop() == 0, server.log()
    ended = alice_events[-1]
    assert (ended["event"], ended["reason"], ended["ended_by"]) == (
        "ended",
        "recording-unavailable",
        "server",
    ), alice_events
    assert "incoming" not in [e["event"] for e in bob_events], bob_events
    cdr = await final_cdr(server.database, ended["call_id"])
    assert (cdr["disposition"], cdr["reason"], cdr["ring_at"]) == (
        "failed",
        "recording-unavailable",
        None,
    )
    assert "Not a directory" in (cdr["end_detail"] or ""), cdr["end_detail"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of our own (root only), unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small-disk", size="2m", mode="0700") as mount:
        yield mount


async def connected_call(
    server: Serve, tmp: Path, duration: float
) -> tuple[
    asyncio.subprocess.Process,
    list[dict[str, Any]],
    asyncio.subprocess.Process,
    list[dict[str, Any]],
]:
    """bob answering (880 Hz), then alice calling him (440 Hz for `duration` s) until connected:
    (bob, his events, alice, her events). Neither is left running if that fails."""
    bob_events: list[dict[str, Any]] = []
    alice_events: list[dict[str, Any]] = []
    bob = await start_cli(
        server, "bob", "answer", "--count", "1", "--tone", str(CALLEE_HZ), config_dir=tmp
    )
    alice = None
    try:
        await read_event(bob, "ready", 60, bob_events)
        alice = await start_cli(
            server, "alice", "call", "bob", "--tone", str(CALLER_HZ), "--duration", str(duration),
            config_dir=tmp,
        )  # fmt: skip
        await read_event(alice, "connected", 60, alice_events)
    except BaseException:
        for process in (alice, bob):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        raise
    return bob, bob_events, alice, alice_events


@pytest.mark.timeout(180)
async def test_a_recording_disk_that_fills_mid_call_ends_the_call_recording_failed(
    tmp_path: Path, user_template: Path, small_disk: Path
) -> None:
    server = new_serve(
        tmp_path / "srv", template=user_template,
        CALLGATE_RECORDING__DIRECTORY=str(small_disk), **FAST,
    )  # fmt: skip
    add_rule(server)
    server.start()
    try:
        bob, bob_events, alice, alice_events = await connected_call(server, tmp_path, 40)
        filled = time.time()
        fill(small_disk / "filler")
        _, alice_events, _ = await finish(alice, alice_events, timeout=60)
        _, bob_events, _ = await finish(bob, bob_events, timeout=60)
    finally:
        assert server.stop() == 0, server.log()
    ended = alice_events[-1]
    assert (ended["event"], ended["reason"]) == ("ended", "recording-failed"), alice_events
    assert bob_events[-1]["reason"] == "recording-failed", bob_events
    cdr = await final_cdr(server.database, ended["call_id"])
    assert (cdr["disposition"], cdr["reason"], cdr["anchored"]) == (
        "answered",
        "recording-failed",
        True,
    )
    # the call ended because of the full disk, before its 40 s were up (how soon after the disk
    # filled is the machine's doing: printed, not asserted against a load-dependent bound)
    end = cdr["end_at"]
    print(f"disk filled -> call ended: {end.timestamp() - filled:.2f} s")
    assert end.timestamp() - filled < 40
    row = await closed_recording(server, ended["call_id"])
    assert row["state"] == "failed" and "No space left" in row["failure"], row
    assert row["chunks"] >= 1  # what was written before the disk filled is kept


def stored_chunks(server: Serve, call_id: str) -> int:
    """Whole chunks in the call's recording file so far (the data dir's recordings)."""
    rows = rows_of(server.database, Recording.__table__, Recording.call_id == call_id)
    if not rows:
        return 0
    path = server.data_dir / "recordings" / rows[0]["file_name"]
    count = 0
    with contextlib.suppress(OSError, ChunkError):  # not there yet, or a chunk mid-write
        for _ in iter_chunks(path.read_bytes()):
            count += 1
    return count


@pytest.mark.timeout(180)
async def test_a_server_killed_mid_call_leaves_a_recording_that_plays_up_to_its_last_chunk(
    tmp_path: Path, user_template: Path
) -> None:
    server = new_serve(tmp_path / "srv", template=user_template, **FAST)
    add_rule(server)
    server.start()
    bob = alice = None
    try:
        bob, _, alice, alice_events = await connected_call(server, tmp_path, 60)
        call_id = alice_events[0]["call_id"]
        # media on disk: at least six stored chunks, flushed 0.25 s or more apart, so more than
        # a second of the call (waited for: a loaded machine writes late, a fixed 2 s may not do)
        await wait_for(lambda: stored_chunks(server, call_id) >= 6, 60, "six chunks on disk")
        server.kill()  # SIGKILL: no last chunk, no closing entry
    finally:
        for process in (alice, bob):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    (row,) = rows_of(server.database, Recording.__table__, Recording.call_id == call_id)
    assert row["state"] == "open"
    server.start()  # closes it as interrupted
    try:
        (row,) = rows_of(server.database, Recording.__table__, Recording.call_id == call_id)
        assert row["state"] == "interrupted" and row["chunks"] >= 3, row
        bundle = tmp_path / "bundle"
        export = server.cli("recording", "export", call_id, "--out", str(bundle))
        assert export.returncode == 0, export.stderr
    finally:
        assert server.stop() == 0, server.log()
    verify = callgate("recording", "verify", str(bundle))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "(interrupted)" in verify.stdout, verify.stdout
    samples, rate = read_stereo(bundle / "audio.wav")
    assert len(samples) > rate  # more than a second of the call before the kill
    talk = samples[len(samples) // 2 :]
    assert abs(channel_peak(talk[:, 0], rate) - CALLER_HZ) < 5.0
    assert abs(channel_peak(talk[:, 1], rate) - CALLEE_HZ) < 5.0
