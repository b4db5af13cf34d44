"""Recordings through a running `callgate serve` (real sockets).

Retention and legal hold: its own purge at start, `callgate recording hold | purge` on the store
and with `--server`, the API's roles (hold: compliance officers only; purge: compliance and
admins) with every refusal audited, and a held recording never deleted.

Export from the server: `callgate recording export --server` (WAV or Ogg/Opus) writes a bundle
that verifies offline, with the caller's tone left and the callee's right; a plain user is
refused and audited."""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from sqlalchemy import update

from callgate.media.packets import MediaPacket
from callgate.recording import keys
from callgate.recording.recorder import RecorderLimits
from callgate.recording.retention import RetentionPolicy
from callgate.recording.service import RecordingService, RecordingSettings
from callgate.recording.store import RecordingRepository
from callgate.records.audit import AuditLog
from callgate.storage.db import Store, open_store, sqlite_url
from callgate.storage.models import Recording
from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import WebServer, serve
from tests.integration.test_recording_retention import record

pytestmark = pytest.mark.timeout(240)  # a dozen CLI processes on a busy machine
CLEO = "inquiry-officer-3"  # cleo's password (compliance)
LONG_AGO = datetime(2019, 1, 1, tzinfo=UTC)
CALLER_HZ, CALLEE_HZ = 440.0, 880.0
RATE = 48000


def opus_tone(hz: float, frames: int) -> list[bytes]:
    """`frames` 20 ms Opus packets of a sine at `hz` (libopus through PyAV)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = RATE, "mono", "s16", 32000
    payloads: list[bytes] = []
    for i in range(frames + 2):  # the encoder lags a little
        t = (np.arange(960) + i * 960) / RATE
        samples = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, i * 960
        payloads += [bytes(p) for p in codec.encode(frame)]
    return payloads[:frames]


async def record_tones(service: RecordingService) -> str:
    """Two seconds of a call: the caller at 440 Hz, the callee at 880 Hz."""
    parties = {"caller": {"handle": "alice"}, "callee": {"handle": "bob"}}
    recorder = await service.start("a" * 32, parties, "2:desk", lambda reason: None)
    start = time.time()
    for leg, hz, ssrc in (("caller", CALLER_HZ, 11), ("callee", CALLEE_HZ, 22)):
        for seq, payload in enumerate(opus_tone(hz, 100)):
            recorder.on_packet(MediaPacket(leg, payload, 3000 + seq * 960, seq, ssrc, 111,
                                           start + seq * 0.02))  # fmt: skip
    await asyncio.wait_for(recorder.first_written(), 30)
    await service.finish(recorder.recording_id)
    return recorder.recording_id


def peak_hz(samples: Any) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum[1:])) + 1])


def age(store: Store, recording_id: str) -> None:
    """As if the recording had ended years ago: its retention is over."""
    with store.engine.begin() as conn:
        conn.execute(
            update(Recording)
            .where(Recording.recording_id == recording_id)
            .values(retain_until=LONG_AGO)
        )


def prepare(data: Path, made: dict[str, str]) -> None:
    """cleo (compliance), and three recorded calls of alice: `expired`, `held` (expired, held
    with the CLI on the store) and `fresh`."""
    added = callgate("user", "add", "cleo", "--role", "compliance", "--data-dir", str(data),
                     "--password-stdin", cwd=data.parent, stdin=CLEO + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    settings = RecordingSettings(
        directory=data / "recordings", key_file=keys.master_key_path(data), min_free_bytes=0,
        limits=RecorderLimits(0.05, 30.0), retention=RetentionPolicy(days=30),
    )  # fmt: skip
    store = open_store(sqlite_url(data))
    try:
        service = RecordingService(RecordingRepository(store), settings, {})
        for name in ("expired", "held", "fresh"):
            made[name] = asyncio.run(record(service, store, "alice", "2:desk"))
        made["tones"] = asyncio.run(record_tones(service))
        age(store, made["expired"])
        age(store, made["held"])
    finally:
        store.close()
    call_of_held = call_of(data, made["held"])
    made["held_call"] = call_of_held
    missing = callgate("recording", "hold", call_of_held, "--data-dir", str(data), cwd=data.parent)
    assert missing.returncode == 2 and "needs a reason" in missing.stderr, missing.stderr
    held = callgate("recording", "hold", call_of_held, "--reason", "SEC inquiry 2026-17",
                    "--data-dir", str(data), "--json", cwd=data.parent)  # fmt: skip
    assert held.returncode == 0, held.stderr
    shown = json.loads(held.stdout)
    assert shown["recording_id"] == made["held"] and shown["legal_hold"] is True


def call_of(data: Path, recording_id: str) -> str:
    store = open_store(sqlite_url(data))
    try:
        row = RecordingRepository(store).get(recording_id)
        assert row is not None
        return row.call_id
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, dict[str, str]]]:
    made: dict[str, str] = {}
    root = tmp_path_factory.mktemp("keep")
    for running in serve(root, prepare=lambda data: prepare(data, made)):
        yield running, made


def token(server: WebServer, handle: str, password: str) -> str:
    with server.client() as client:
        answer = client.post("/api/login", json={"handle": handle, "password": password})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def audit_of(data: Path, recording_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    store = open_store(sqlite_url(data))
    try:
        entries = AuditLog(store).recent(500)
    finally:
        store.close()
    return [
        (e.actor, e.action, json.loads(e.details))
        for e in reversed(entries)
        if e.object == f"recording:{recording_id}"
    ]


def test_held_recordings_outlast_retention_and_every_purge_is_audited(
    server: tuple[WebServer, dict[str, str]],
) -> None:
    web, made = server
    data = web.root / "data"
    files = {
        name: data / "recordings" / f"{made[name]}.cgrec" for name in made if name != "held_call"
    }

    # serve purges on its own at start: the expired recording goes, the held one stays
    deadline = time.monotonic() + 30
    while files["expired"].exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not files["expired"].exists() and files["held"].exists() and files["fresh"].exists()
    purged = audit_of(data, made["expired"])[-1]
    assert purged[:2] == ("system", "recording.purged"), purged
    assert purged[2]["retain_until"].startswith("2019-01-01")

    # hold: compliance officers only (admins too are refused), every refusal audited
    body = {"hold": True, "reason": "FCA matter 88"}
    url = f"/api/recordings/{made['fresh']}/legal-hold"
    with web.client() as client:
        for handle in ("bob", "admin"):
            headers = {"Authorization": f"Bearer {web.token(handle)}"}
            refused = client.put(url, json=body, headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["detail"] == "compliance officers only"
        cleo = {"Authorization": f"Bearer {token(web, 'cleo', CLEO)}"}
        no_reason = client.put(url, json={"hold": True}, headers=cleo)
        assert no_reason.status_code == 422 and "needs a reason" in no_reason.text
        unknown = client.put(f"/api/recordings/{'0' * 32}/legal-hold", json=body, headers=cleo)
        assert unknown.status_code == 404
        plain_purge = client.post(
            "/api/recordings/purge", headers={"Authorization": f"Bearer {web.token('bob')}"}
        )
        assert plain_purge.status_code == 403
    denied = [(a, d["wanted"]) for a, act, d in audit_of(data, made["fresh"])
              if act == "recording.access_denied"]  # fmt: skip
    assert denied == [("bob", "legal-hold"), ("admin", "legal-hold")]

    cli = {"CALLGATE_ADMIN_PASSWORD": CLEO, "CALLGATE_CONFIG_DIR": str(web.root / "cfg")}
    remote = ("--server", web.url, "--user", "cleo")
    # cleo releases the held recording (by its call id) and holds the fresh one, over the API
    released = callgate("recording", "hold", made["held_call"], "--release", *remote,
                        cwd=web.root, **cli)  # fmt: skip
    assert released.returncode == 0, released.stderr
    assert f"recording {made['held']}: not on legal hold" in released.stdout
    held = callgate("recording", "hold", made["fresh"], "--reason", "FCA matter 88", *remote,
                    "--json", cwd=web.root, **cli)  # fmt: skip
    assert held.returncode == 0, held.stderr
    assert json.loads(held.stdout)["hold_reason"] == "FCA matter 88"
    holds = [(a, d) for a, act, d in audit_of(data, made["fresh"]) if act == "legal_hold.set"]
    assert holds == [("cleo", {"hold": True, "reason": "FCA matter 88"})]

    # the released one goes at the next purge (audited as cleo's); the fresh one is not due
    purge = callgate("recording", "purge", *remote, "--json", cwd=web.root, **cli)
    assert purge.returncode == 0, purge.stderr
    assert json.loads(purge.stdout) == {"deleted": [made["held"]], "held_kept": 0, "refused": {}}
    assert not files["held"].exists()
    assert audit_of(data, made["held"])[-1][:2] == ("cleo", "recording.purged")

    # the fresh one's retention over too: its hold keeps it, whoever purges
    store = open_store(sqlite_url(data))
    try:
        age(store, made["fresh"])
    finally:
        store.close()
    with web.client() as client:
        answer = client.post(
            "/api/recordings/purge", headers={"Authorization": f"Bearer {web.token('admin')}"}
        )
    assert answer.status_code == 200 and answer.json() == {
        "deleted": [], "held_kept": 1, "refused": {},
    }  # fmt: skip
    local = callgate("recording", "purge", "--data-dir", str(data), cwd=web.root)
    assert local.returncode == 0, local.stderr
    assert local.stdout.strip() == "deleted 0 recordings past retention; kept 1 on legal hold"
    assert files["fresh"].exists()
    shown = callgate("recording", "show", made["fresh"], "--json", *remote, cwd=web.root, **cli)
    assert json.loads(shown.stdout)["legal_hold"] is True
    table = callgate("recording", "list", "--data-dir", str(data), cwd=web.root)
    line = next(x for x in table.stdout.splitlines() if made["fresh"] in x)
    assert "2019-01-01" in line and "yes" in line, table.stdout


def test_a_bundle_exported_from_the_server_verifies_offline(
    server: tuple[WebServer, dict[str, str]],
) -> None:
    web, made = server
    data = web.root / "data"
    cli = {"CALLGATE_ADMIN_PASSWORD": CLEO, "CALLGATE_CONFIG_DIR": str(web.root / "cfg")}
    remote = ("--server", web.url, "--user", "cleo")

    bundles = {}
    for audio in ("ogg", "wav"):
        out = web.root / f"bundle-{audio}"
        exported = callgate("recording", "export", "a" * 32, "--out", str(out), "--format", audio,
                            *remote, cwd=web.root, **cli)  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        assert f"exported recording {made['tones']} (2.0 s) from {web.url}" in exported.stdout
        verify = callgate("recording", "verify", str(out), "--json", cwd=web.root)
        assert verify.returncode == 0, verify.stdout
        assert json.loads(verify.stdout)["audio"] == f"audio.{audio}"
        bundles[audio] = out
    exports = [(actor, d["audio_file"]) for actor, action, d in audit_of(data, made["tones"])
               if action == "recording.exported"]  # fmt: skip
    assert exports == [("cleo", "audio.ogg"), ("cleo", "audio.wav")]

    # Ogg/Opus: the caller's tone on the left, the callee's on the right
    with av.open(str(bundles["ogg"] / "audio.ogg")) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
        decoded = np.concatenate(
            [f.to_ndarray().reshape(2, -1) for f in container.decode(audio=0)], axis=1
        )
    talk = decoded[:, RATE // 2 : RATE + RATE // 2]
    assert abs(peak_hz(talk[0]) - CALLER_HZ) < 5 and abs(peak_hz(talk[1]) - CALLEE_HZ) < 5
    with wave.open(str(bundles["wav"] / "audio.wav")) as reader:
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    stereo = frames.reshape(-1, 2).astype(np.float64)[RATE // 2 : RATE + RATE // 2]
    assert abs(peak_hz(stereo[:, 0]) - CALLER_HZ) < 5 and abs(peak_hz(stereo[:, 1]) - CALLEE_HZ) < 5

    # swapping in the other export's audio is caught offline
    (bundles["ogg"] / "audio.ogg").write_bytes(b"OggS" + bytes(100))
    tampered = callgate("recording", "verify", str(bundles["ogg"]), cwd=web.root)
    assert tampered.returncode == 1 and "audio.ogg is not the audio" in tampered.stdout

    # a plain user gets nothing, and the refusal is audited
    with web.client() as client:
        headers = {"Authorization": f"Bearer {web.token('bob')}"}
        refused = client.get(f"/api/recordings/{made['tones']}/bundle", headers=headers)
    assert refused.status_code == 403
    denied = [(a, d["wanted"]) for a, act, d in audit_of(data, made["tones"])
              if act == "recording.access_denied"]  # fmt: skip
    assert denied == [("bob", "export")]
