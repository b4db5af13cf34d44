"""A long recorded call exported from its stored, encrypted file: the audio is decoded and
written a window at a time (0.5 s of the timeline here, so this minute-long call passes through
it 120 times; 60 s in service), and the bundle is the one an in-memory decode would give: the
same WAV bytes, an Ogg/Opus of the same length, both verifying offline."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import av
import pytest

from callgate.recording import audio
from callgate.recording.bundle import export_bundle, verify_bundle
from callgate.recording.chunks import encode_packets
from callgate.recording.recorder import RecorderLimits
from callgate.recording.service import RecordingService, RecordingSettings
from callgate.recording.store import RecordingRepository
from callgate.records.audit import AuditLog, load_or_create_signing_key
from callgate.storage.db import open_store, sqlite_url
from tests.unit.recording.test_audio import long_call

SECONDS = 60


async def test_a_long_call_exports_a_window_at_a_time_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(sqlite_url(tmp_path / "db.sqlite"))
    settings = RecordingSettings(tmp_path / "rec", tmp_path / "master.key", min_free_bytes=0,
                                 limits=RecorderLimits(3600, 3600))  # fmt: skip
    service = RecordingService(RecordingRepository(store), settings, {})
    parties = {"caller": {"handle": "alice"}, "callee": {"handle": "bob"}}
    recorder = await service.start("c" * 32, parties, None, lambda reason: None)
    packets = long_call(audio.OPUS, SECONDS)
    for at in range(0, len(packets), 1000):  # ~10 s a chunk, as stored
        recorder.writer.append(encode_packets(packets[at : at + 1000]))
    await service.finish(recorder.recording_id)
    row = RecordingRepository(store).get(recorder.recording_id)
    assert row is not None and row.chunks >= SECONDS // 10
    expected, seconds = audio.stereo_wav_bytes(packets)  # the whole call in one window

    monkeypatch.setattr(audio, "WINDOW_SECONDS", 0.5)
    monkeypatch.setattr(audio, "REORDER_SECONDS", 0.1)
    monkeypatch.setattr(audio, "REORDER_PACKETS", 5)
    master = service.master_key()
    key = load_or_create_signing_key(tmp_path / "audit.key")
    bundles = {}
    for kind in ("wav", "ogg"):
        bundles[kind] = tmp_path / kind
        done = export_bundle(row, settings.directory, master, AuditLog(store), key,
                             bundles[kind], "test", kind)  # fmt: skip
        assert done["seconds"] == pytest.approx(seconds) == pytest.approx(SECONDS, abs=0.01)
        verdict = verify_bundle(bundles[kind])
        assert verdict.ok, verdict.problems
    store.close()

    assert (bundles["wav"] / "audio.wav").read_bytes() == expected
    with wave.open(str(bundles["wav"] / "audio.wav")) as reader:
        assert reader.getnframes() == round(SECONDS * audio.RATE)
    with av.open(str(bundles["ogg"] / "audio.ogg")) as container:
        decoded = sum(frame.samples for frame in container.decode(audio=0))
    assert abs(decoded - SECONDS * audio.RATE) < 2 * 960  # the encoder's padding aside


async def test_a_jumping_leg_is_re_anchored_and_the_bundle_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the caller's timestamps jump an hour after 2 s: the export lasts the call's 4 s, not an
    # hour, and the export's audited entry, `verify` and the CLI line name the re-anchoring.
    # The callee's packets sent from 1 s to 2 s arrive together at 2.5 s (a stall): placed as
    # sent; but through a held window of 0.5 s they come too late and are left out, which the
    # audited entry and `verify` count per leg.
    from typer.testing import CliRunner

    from callgate.cli.app import app
    from callgate.recording.chunks import Packet
    from tests.unit.recording.test_placement import HOUR, run

    store = open_store(sqlite_url(tmp_path / "db.sqlite"))
    settings = RecordingSettings(tmp_path / "rec", tmp_path / "master.key", min_free_bytes=0)
    service = RecordingService(RecordingRepository(store), settings, {})
    parties = {"caller": {"handle": "alice"}, "callee": {"handle": "bob"}}
    recorder = await service.start("d" * 32, parties, None, lambda reason: None)
    callee = [p if not 1 <= p.arrival - 1000 < 2 else
              Packet(p.leg, p.seq, p.timestamp, 1002.5 + p.seq * 1e-5, p.payload)
              for p in run("callee", audio.OPUS, 880, (0, 4), 0.0)]  # fmt: skip
    packets = sorted(
        run("caller", audio.OPUS, 440, (0, 2), 0.0)
        + run("caller", audio.OPUS, 660, (2, 4), 2.0 + HOUR, seq=100)
        + callee,
        key=lambda p: p.arrival,
    )
    recorder.writer.append(encode_packets(packets))
    await service.finish(recorder.recording_id)
    row = RecordingRepository(store).get(recorder.recording_id)
    assert row is not None
    key = load_or_create_signing_key(tmp_path / "audit.key")
    done = export_bundle(row, settings.directory, service.master_key(), AuditLog(store), key,
                         tmp_path / "bundle", "test")  # fmt: skip
    monkeypatch.setattr(audio, "WINDOW_SECONDS", 0.5)
    monkeypatch.setattr(audio, "REORDER_SECONDS", 0.1)
    small = export_bundle(row, settings.directory, service.master_key(), AuditLog(store), key,
                          tmp_path / "small", "test")  # fmt: skip
    store.close()
    assert done["seconds"] == pytest.approx(4.0, abs=0.05)
    assert done["dropped"] == {"caller": 0, "callee": 0}
    verdict = verify_bundle(tmp_path / "bundle")
    assert verdict.ok, verdict.problems
    assert verdict.facts["reanchors"] == {"caller": 1, "callee": 0}
    assert verdict.facts["dropped"] == {"caller": 0, "callee": 0}
    shown = CliRunner().invoke(app, ["recording", "verify", str(tmp_path / "bundle")])
    assert shown.exit_code == 0, shown.output
    assert "re-anchored on arrival time (RTP timestamps jumped): caller 1x" in shown.output
    assert "left out" not in shown.output

    left_out = small["dropped"]
    assert left_out["caller"] == 0 and left_out["callee"] > 0
    shown = CliRunner().invoke(app, ["recording", "verify", str(tmp_path / "small"), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["dropped"] == left_out
    shown = CliRunner().invoke(app, ["recording", "verify", str(tmp_path / "small")])
    assert f"audio left out (too late for the held window): callee {left_out['callee']} " in (
        shown.output
    )
