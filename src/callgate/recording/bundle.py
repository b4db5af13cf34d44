"""Export a recording as a bundle an auditor checks offline, and check one (`verify_bundle`).

    bundle/
      recording.cgrec     the encrypted chunks, as stored
      metadata.json       participants, streams, times, rule, codec, every chunk's SHA-256
      audio.wav           stereo, caller left, callee right, decoded at export (or audio.ogg:
                          the same, encoded as Ogg/Opus)
      audit.jsonl         the audit entries from the recording's closing entry to the export
      checkpoint.txt      a signed checkpoint of the audit log covering the last of them
      audit-public.pem    the key that signed it

Verification needs no key but the public one: the chunks against the metadata's list (which
names a changed, missing or moved chunk), the file and metadata against the closing entry's
digest, the entries' hash chain up to the signed checkpoint, and the audio file against the
export's entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from callgate.recording import keys
from callgate.recording.audio import AudioError, PacketSource, Rendered, render, write_wav
from callgate.recording.chunks import (
    HEADER_BYTES,
    ChunkError,
    Packet,
    decode_packets,
    iter_chunks,
    open_chunk,
    read_chunks,
    read_header,
)
from callgate.recording.ogg import OggOpusWriter
from callgate.recording.store import RecordingRow, recording_digest
from callgate.records.audit import AuditLog
from callgate.records.audit_chain import (
    CheckpointError,
    check_span,
    format_time,
    verify_checkpoint,
)

log = logging.getLogger(__name__)
CLOSING = ("recording.closed", "recording.failed", "recording.interrupted")
AUDIO_FILES = {"wav": "audio.wav", "ogg": "audio.ogg"}


class BundleError(Exception):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decrypt(row: RecordingRow, data: bytes, master: bytes) -> list[Any]:
    """Every packet of a stored recording (ChunkError naming the first bad chunk)."""
    key = keys.unwrap(master, row.wrapped_key)
    packets = []
    for position, chunk in enumerate(iter_chunks(data)):
        packets.extend(decode_packets(open_chunk(key, row.recording_id, chunk, position), position))
    return packets


def stored_packets(row: RecordingRow, path: Path, master: bytes) -> PacketSource:
    """The packets of the recording file at `path`, read and decrypted a chunk at a time each
    time the source is called (ChunkError naming the first bad chunk)."""
    key = keys.unwrap(master, row.wrapped_key)

    def read() -> Iterator[Packet]:
        with path.open("rb") as handle:
            handle.seek(HEADER_BYTES)
            for position, chunk in enumerate(read_chunks(handle)):
                plain = open_chunk(key, row.recording_id, chunk, position)
                yield from decode_packets(plain, position)

    return read


def write_audio(packets: PacketSource, codec: str, audio: Path) -> Rendered:
    """The call decoded into `audio` (.wav or .ogg), as it is decoded: memory stays bounded."""
    if audio.suffix == ".ogg":
        with OggOpusWriter(audio) as ogg:
            rendered = render(packets, codec, ogg.write)
    else:
        with audio.open("wb") as out:
            rendered = write_wav(packets, out, codec)
    left_out = {leg: count for leg, count in rendered.dropped.items() if count}
    if left_out:
        log.warning("%s: decoded pieces that came too late for the held window were left out: "
                    "%s", audio.name, left_out)  # fmt: skip
    moved = {leg: count for leg, count in rendered.reanchors.items() if count}
    if moved:
        log.warning("%s: RTP timestamps and arrival times parted (a new SSRC or a jump): "
                    "re-anchored on arrival time %s", audio.name, moved)  # fmt: skip
    return rendered


def export_bundle(
    row: RecordingRow,
    directory: Path,
    master: bytes,
    audit: AuditLog,
    signing_key: Ed25519PrivateKey,
    out: Path,
    actor: str,
    audio_format: str = "wav",
) -> dict[str, Any]:
    """Write the bundle to `out` (a new directory), audio as `audio_format` ("wav" or "ogg")."""
    if audio_format not in AUDIO_FILES:
        raise BundleError(f"audio format {audio_format!r}: use wav or ogg")
    if row.state == "open" or row.audit_seq is None:
        raise BundleError(f"recording {row.recording_id} is still open")
    out.mkdir(parents=True, exist_ok=False)
    stored = directory / row.file_name
    shutil.copyfile(stored, out / "recording.cgrec")
    (out / "metadata.json").write_text(json.dumps(row.metadata, indent=2, sort_keys=True) + "\n")
    audio = out / AUDIO_FILES[audio_format]
    try:
        rendered = write_audio(stored_packets(row, out / "recording.cgrec", master), row.codec,
                               audio)  # fmt: skip
    except AudioError as exc:
        raise BundleError(str(exc)) from exc
    seconds = rendered.seconds
    details = {
        "call_id": row.call_id,
        "audio_file": audio.name,
        "audio_sha256": _sha256(audio),
        "seconds": round(seconds, 3),
        "reanchors": rendered.reanchors,  # per leg: where its timestamps were not followed
        "dropped": rendered.dropped,  # per leg: decoded pieces left out of the audio
    }
    entry = audit.append(actor, "recording.exported", f"recording:{row.recording_id}", details)
    checkpoint = audit.checkpoint(signing_key)
    entries = [e for e in audit.iter_entries() if row.audit_seq <= e.seq <= checkpoint.size]
    with (out / "audit.jsonl").open("w", encoding="utf-8") as handle:
        for e in entries:
            line = {
                "seq": e.seq, "at": format_time(e.at), "actor": e.actor, "action": e.action,
                "object": e.object, "details": e.details, "prev_hash": e.prev_hash, "hash": e.hash,
            }  # fmt: skip
            handle.write(json.dumps(line, sort_keys=True) + "\n")
    (out / "checkpoint.txt").write_text(checkpoint.note, encoding="utf-8")
    public = signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (out / "audit-public.pem").write_bytes(public)
    return {"recording_id": row.recording_id, "export_entry": entry.seq, "seconds": seconds,
            "reanchors": rendered.reanchors, "dropped": rendered.dropped}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    problems: list[str]
    facts: dict[str, Any]


def verify_bundle(bundle: Path, public_key_path: Path | None = None) -> Verdict:
    problems: list[str] = []
    facts: dict[str, Any] = {}
    try:
        metadata = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))
        stored = bundle / "recording.cgrec"
        file_sha = _sha256(stored)
        lines = (bundle / "audit.jsonl").read_text(encoding="utf-8").splitlines()
        note = (bundle / "checkpoint.txt").read_text(encoding="utf-8")
        pem = (public_key_path or bundle / "audit-public.pem").read_bytes()
    except (OSError, ValueError) as exc:
        return Verdict(False, [f"bundle incomplete: {exc}"], facts)
    recording_id = str(metadata.get("recording_id", ""))
    facts["recording_id"] = recording_id
    problems += _check_chunks(stored, recording_id, list(metadata.get("chunk_sha256") or []), facts)
    entries = [json.loads(line) for line in lines if line.strip()]
    problems += _check_chain(entries, note, pem, facts)
    closing = [
        e for e in entries if e["action"] in CLOSING and e["object"] == f"recording:{recording_id}"
    ]
    if not closing:
        problems.append("the audit entries do not include the recording's closing entry")
    else:
        details = json.loads(closing[0]["details"])
        if details.get("file_sha256") != file_sha:
            problems.append("recording.cgrec is not the file the audit log vouches for")
        if details.get("digest") != recording_digest(file_sha, metadata):
            problems.append("metadata.json or recording.cgrec differs from the audited digest")
        facts["state"] = closing[0]["action"].removeprefix("recording.")
    exports = [
        e
        for e in entries
        if e["action"] == "recording.exported" and e["object"] == f"recording:{recording_id}"
    ]
    if not exports:
        problems.append("the audit entries do not include this export")
    else:
        exported = json.loads(exports[-1]["details"])
        name = exported.get("audio_file", AUDIO_FILES["wav"])
        audio = bundle / name if name in AUDIO_FILES.values() else None
        if audio is None or not audio.exists() or exported.get("audio_sha256") != _sha256(audio):
            problems.append(f"{name} is not the audio this export wrote")
        facts["audio"] = name
        facts["audio_seconds"] = exported.get("seconds")
        facts["reanchors"] = exported.get("reanchors", {})  # {} from older exports
        facts["dropped"] = exported.get("dropped", {})
    return Verdict(not problems, problems, facts)


@dataclass(frozen=True, slots=True)
class _Seen:
    """What verification keeps of a chunk (not its bytes)."""

    index: int
    last: bool
    sha256: str


def _check_chunks(
    stored: Path, recording_id: str, listed: list[str], facts: dict[str, Any]
) -> list[str]:
    """Each chunk of the file against the metadata's list, read a chunk at a time."""
    try:
        with stored.open("rb") as handle:
            if read_header(handle.read(HEADER_BYTES)) != recording_id:
                return ["recording.cgrec belongs to another recording"]
            chunks = [_Seen(c.index, c.last, c.sha256) for c in read_chunks(handle)]
    except ChunkError as exc:
        return [str(exc)]
    except OSError as exc:
        return [f"recording.cgrec: {exc}"]
    facts["chunks"] = len(chunks)
    problems = []
    for position, chunk in enumerate(chunks):
        if position >= len(listed):
            problems.append(f"chunk {position}: not in the recording's chunk list (added)")
        elif chunk.index != position:
            problems.append(f"chunk {position}: found chunk {chunk.index} in its place (reordered)")
        elif chunk.sha256 != listed[position]:
            problems.append(f"chunk {position}: contents differ from the recorded digest (altered)")
        if problems:
            return problems
    if len(chunks) < len(listed):
        return [f"chunk {len(chunks)}: missing (the file ends after {len(chunks)} chunks)"]
    if chunks and not chunks[-1].last:
        problems.append(f"chunk {len(chunks) - 1}: the recording has no last chunk (cut short)")
    return problems


def _check_chain(
    entries: list[dict[str, Any]], note: str, pem: bytes, facts: dict[str, Any]
) -> list[str]:
    if not entries:
        return ["no audit entries in the bundle"]
    try:
        public = load_pem_public_key(pem)
        if not isinstance(public, Ed25519PublicKey):
            return ["audit-public.pem is not an Ed25519 key"]
        checkpoint = verify_checkpoint(note, public)
    except (CheckpointError, ValueError) as exc:
        return [f"checkpoint: {exc}"]
    rows = [
        (e["seq"], e["at"], e["actor"], e["action"], e["object"], e["details"], e["prev_hash"], e["hash"])
        for e in entries
    ]  # fmt: skip
    lo, hi = rows[0][0], rows[-1][0]
    result = check_span(rows, lo, hi, rows[0][6], {checkpoint.size: [checkpoint.head_hash]})
    if result.problem:
        return [f"audit: {result.problem}"]
    if checkpoint.size != hi or result.checked != 1:
        return ["audit: the signed checkpoint does not cover these entries"]
    facts["audit_entries"] = (lo, hi)
    return []
