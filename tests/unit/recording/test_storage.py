"""The recording file and its keys, without a network: chunks written through `ChunkWriter`
decrypt back to the packets; a flipped byte, a swapped pair, a missing or a cut-short chunk is
named by its position; the master key is refused when it is malformed or readable by others."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from callgate.recording import keys
from callgate.recording.bundle import _check_chunks
from callgate.recording.chunks import (
    HEADER_BYTES,
    ChunkError,
    Packet,
    decode_packets,
    encode_packets,
    iter_chunks,
    open_chunk,
)
from callgate.recording.writer import ChunkWriter, RecordingFailure

RID = "0123456789abcdef0123456789abcdef"


def packets(n: int, leg: str = "caller") -> list[Packet]:
    return [Packet(leg, i, 960 * i, 1000.0 + i / 50, bytes([i % 256]) * (20 + i)) for i in range(n)]


def write(tmp_path: Path, chunks: int = 4) -> tuple[Path, bytes, list[str]]:
    key = keys.new_recording_key()
    writer = ChunkWriter(tmp_path / "r.cgrec", RID, key, 0)
    for i in range(chunks):
        writer.append(
            encode_packets(packets(3 + i, "caller" if i % 2 else "callee")), last=i == chunks - 1
        )
    return writer.path, key, writer.chunks


def checked(data: bytes, listed: list[str], tmp_path: Path) -> list[str]:
    """What a bundle's verification says of a recording file holding `data`."""
    path = tmp_path / "bundle.cgrec"
    path.write_bytes(data)
    return _check_chunks(path, RID, listed, {})


def test_chunks_decrypt_back_to_the_packets_in_order(tmp_path: Path) -> None:
    path, key, _ = write(tmp_path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    found = list(iter_chunks(path.read_bytes()))
    assert [c.index for c in found] == [0, 1, 2, 3] and [c.last for c in found] == [0, 0, 0, 1]
    second = decode_packets(open_chunk(key, RID, found[1], 1), 1)
    assert second == packets(4, "caller")


def test_a_flipped_byte_is_named_by_its_chunk(tmp_path: Path) -> None:
    path, key, listed = write(tmp_path)
    data = bytearray(path.read_bytes())
    third = list(iter_chunks(bytes(data)))[2]
    at = bytes(data).index(third.raw) + 30
    data[at] ^= 0x40
    with pytest.raises(ChunkError, match="chunk 2: fails authentication") as caught:
        for position, chunk in enumerate(iter_chunks(bytes(data))):
            open_chunk(key, RID, chunk, position)
    assert caught.value.index == 2
    assert checked(bytes(data), listed, tmp_path) == [
        "chunk 2: contents differ from the recorded digest (altered)"
    ]


def test_swapped_missing_and_cut_short_chunks_are_named(tmp_path: Path) -> None:
    path, key, listed = write(tmp_path)
    data = path.read_bytes()
    head, chunks = data[:HEADER_BYTES], list(iter_chunks(data))
    swapped = head + chunks[0].raw + chunks[2].raw + chunks[1].raw + chunks[3].raw
    assert checked(swapped, listed, tmp_path) == ["chunk 1: found chunk 2 in its place (reordered)"]
    with pytest.raises(ChunkError, match="chunk 1: found chunk 2"):
        open_chunk(key, RID, list(iter_chunks(swapped))[1], 1)
    missing = head + b"".join(c.raw for c in chunks[:3])
    assert checked(missing, listed, tmp_path) == ["chunk 3: missing (the file ends after 3 chunks)"]
    cut = data[:-10]
    assert checked(cut, listed, tmp_path) == ["chunk 3: cut short"]


def test_a_chunk_from_another_recording_does_not_decrypt(tmp_path: Path) -> None:
    path, key, _ = write(tmp_path)
    chunk = next(iter(iter_chunks(path.read_bytes())))
    with pytest.raises(ChunkError, match="chunk 0: fails authentication"):
        open_chunk(key, "f" * 32, chunk, 0)


def test_a_writer_refuses_chunks_when_free_disk_is_below_the_threshold(tmp_path: Path) -> None:
    key = keys.new_recording_key()
    writer = ChunkWriter(tmp_path / "r.cgrec", RID, key, 0)
    writer.append(b"first")
    writer._min_free = 1 << 62  # more than any disk has
    with pytest.raises(RecordingFailure, match="chunk 1 not written: free disk"):
        writer.append(b"second")
    with pytest.raises(RecordingFailure, match="closed"):
        writer.append(b"third")
    assert len(list(iter_chunks((tmp_path / "r.cgrec").read_bytes()))) == 1


def test_master_key_is_created_0600_and_refused_when_bad(tmp_path: Path) -> None:
    path = tmp_path / "keys" / keys.MASTER_KEY_FILENAME
    key = keys.load_master_key(path, {})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert keys.load_master_key(path, {}) == key
    recording_key = keys.new_recording_key()
    assert keys.unwrap(key, keys.wrap(key, recording_key)) == recording_key
    with pytest.raises(keys.MasterKeyError, match="does not unwrap"):
        keys.unwrap(os.urandom(32), keys.wrap(key, recording_key))
    os.chmod(path, 0o644)
    with pytest.raises(keys.MasterKeyError, match="must not be readable by group or others"):
        keys.load_master_key(path, {})
    os.chmod(path, 0o600)
    path.write_text("not base64!\n")
    with pytest.raises(keys.MasterKeyError, match="not base64"):
        keys.load_master_key(path, {})
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(keys.MasterKeyError, match="16 bytes, need 32"):
        keys.load_master_key(path, {keys.MASTER_KEY_ENV: short})
    with pytest.raises(keys.MasterKeyError, match="missing"):
        keys.load_master_key(tmp_path / "absent", {}, create=False)


def test_metrics_and_health_say_whether_calls_can_be_recorded(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from callgate.recording.metrics import RecordingCollector
    from callgate.recording.service import RecordingService, RecordingSettings

    def service(key_file: Path) -> RecordingService:
        settings = RecordingSettings(directory=tmp_path / "rec", key_file=key_file)
        return RecordingService(None, settings, {})  # type: ignore[arg-type]  # not used here

    good = service(tmp_path / "keys" / "master.key")
    bad_file = tmp_path / "bad.key"
    bad_file.write_text("garbage\n")
    os.chmod(bad_file, 0o600)
    bad = service(bad_file)
    assert good.health() == {"ok": True, "active": 0, "failed": 0}
    assert bad.health()["ok"] is False and "not base64" in bad.health()["error"]
    for svc, available in ((good, 1.0), (bad, 0.0)):
        registry = CollectorRegistry()
        registry.register(RecordingCollector(svc))
        text = generate_latest(registry).decode()
        assert f"callgate_recording_available {available}" in text, text
        assert "callgate_recordings_active 0.0" in text
        assert "callgate_recordings_failed_total 0.0" in text
