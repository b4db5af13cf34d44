"""The audit log's format: a hash chain of entries and Ed25519-signed checkpoints (pure code).

Entries
    Each entry has a sequence number `seq` (1, 2, 3, … without gaps), a UTC time `at`, an `actor`,
    an `action`, an `object` and `details` (a JSON object), plus `prev_hash` and `hash`, both 64
    lowercase hex digits::

        hash = SHA-256(bytes.fromhex(prev_hash) ‖ canonical_json(body))
        body = {"action", "actor", "at", "details", "object", "seq"}

    `at` is ISO 8601 in UTC with microseconds ("2026-11-27T21:19:21.000000+00:00"). The first
    entry's `prev_hash` is 64 zeros (`GENESIS`); every later entry's is the previous entry's hash,
    so editing, deleting, inserting or reordering any entry breaks the chain from that entry on.

Canonical JSON
    Keys sorted, separators "," and ":" without spaces, UTF-8 (no \\u escapes of non-ASCII), and no
    NaN or infinities (refused).

Checkpoints
    In the spirit of RFC 9162 and the C2SP tlog-checkpoint / signed-note formats, a checkpoint is
    a note whose text is::

        callgate-audit
        <size>
        <base64 of the 32-byte head hash>

    (each line newline-terminated), followed by an empty line and one signature line::

        — <key name> <base64(key_id ‖ Ed25519 signature of the text)>

    where key_id = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4] as in C2SP signed
    notes. A checkpoint of size N commits to the hash of entry N (GENESIS when N = 0): a log
    shorter than N, or whose entry N has another hash, has been truncated or rewritten.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring as _json_string  # C-accelerated
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from callgate.errors import CallgateError

GENESIS = "0" * 64
ORIGIN = "callgate-audit"
KEY_NAME = "callgate-audit"
_SIG_PREFIX = "\u2014 "  # "— " (em dash, space) as in C2SP signed notes
_ED25519_TYPE = b"\x01"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not valid in canonical JSON: {name}")


# allow_nan=False makes NaN and infinities a ValueError; one encoder and decoder, built once.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8; NaN and infinities refused."""
    return _ENCODER.encode(value).encode("utf-8")


def parse_details(text: str) -> dict[str, Any]:
    """The `details` column back to its object (ValueError when it is not a JSON object)."""
    value = _DECODER.decode(text)
    if not isinstance(value, dict):
        raise ValueError("details is not a JSON object")
    return value


def format_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("naive datetime in an audit entry")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: datetime
    actor: str
    action: str
    object: str
    details: str  # canonical JSON text of an object, as stored
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": format_time(self.at),
            "actor": self.actor,
            "action": self.action,
            "object": self.object,
            "details": parse_details(self.details),
        }

    def as_json(self) -> dict[str, Any]:
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}


def entry_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """SHA-256(prev_hash bytes ‖ canonical JSON of the entry's body), as 64 hex digits."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(body)).hexdigest()


def body_json(seq: int, at: str, actor: str, action: str, object: str, details: str) -> bytes:
    """The canonical JSON of an entry's body, built around the stored `details` text.

    Equal to `canonical_json(body)` whenever `details` is the canonical text of an object (as
    `append` stores it), at a fraction of the cost: no parsing, no re-encoding of `details`. It
    stays injective for any `details` text: every other field is a JSON string literal or an
    integer, so the split of the text into fields is unique — an edited `details` (even one that is
    not JSON) always changes the bytes hashed.
    """
    return (
        f'{{"action":{_json_string(action)},"actor":{_json_string(actor)},'
        f'"at":{_json_string(at)},"details":{details},"object":{_json_string(object)},'
        f'"seq":{int(seq)}}}'
    ).encode()


# ---- checkpoints (signed notes) ----


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey, name: str = KEY_NAME) -> bytes:
    """C2SP signed-note key ID: SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key)[:4]."""
    data = name.encode() + b"\n" + _ED25519_TYPE + public_key_bytes(key)
    return hashlib.sha256(data).digest()[:4]


def checkpoint_text(size: int, head_hash: str) -> str:
    head = base64.b64encode(bytes.fromhex(head_hash)).decode("ascii")
    return f"{ORIGIN}\n{size}\n{head}\n"


def sign_checkpoint(key: Ed25519PrivateKey, size: int, head_hash: str) -> str:
    """The signed note of a checkpoint: its text, an empty line and the signature line."""
    text = checkpoint_text(size, head_hash)
    signature = key.sign(text.encode("utf-8"))
    blob = base64.b64encode(key_id(key.public_key()) + signature).decode("ascii")
    return f"{text}\n{_SIG_PREFIX}{KEY_NAME} {blob}\n"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    size: int
    head_hash: str
    note: str


class CheckpointError(CallgateError, ValueError):
    """A checkpoint that is malformed, or whose signature does not verify."""


def parse_checkpoint(note: str) -> tuple[Checkpoint, str, bytes, bytes]:
    """(checkpoint, signed text, key id, signature) of a signed note; CheckpointError if malformed."""
    text, sep, signatures = note.partition("\n\n")
    lines = text.split("\n")
    if not sep or len(lines) < 3 or lines[0] != ORIGIN:
        raise CheckpointError("not a callgate-audit checkpoint note")
    try:
        size = int(lines[1])
        head = base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        raise CheckpointError("checkpoint size or head hash is malformed") from None
    if size < 0 or len(head) != 32 or str(size) != lines[1]:
        raise CheckpointError("checkpoint size or head hash is malformed")
    for line in signatures.splitlines():
        if not line.startswith(_SIG_PREFIX):
            continue
        name, _, blob = line[len(_SIG_PREFIX) :].partition(" ")
        if name != KEY_NAME:
            continue
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raise CheckpointError("checkpoint signature is not base64") from None
        if len(raw) != 4 + 64:
            raise CheckpointError("checkpoint signature has the wrong length")
        return Checkpoint(size, head.hex(), note), text + "\n", raw[:4], raw[4:]
    raise CheckpointError(f"checkpoint has no signature by {KEY_NAME}")


def verify_checkpoint(note: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint of `note` when its signature by `public_key` verifies; else CheckpointError."""
    checkpoint, text, kid, signature = parse_checkpoint(note)
    if kid != key_id(public_key):
        raise CheckpointError("checkpoint is signed by another key")
    try:
        public_key.verify(signature, text.encode("utf-8"))
    except InvalidSignature:
        raise CheckpointError("checkpoint signature is invalid") from None
    return checkpoint


# ---- verification ----


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    size: int  # entries read
    first_bad_seq: int | None
    problem: str | None
    checkpoints: int = 0  # checkpoints whose signature and head were checked

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "checkpoints": self.checkpoints,
        }


def _bad(size: int, seq: int | None, problem: str, checkpoints: int = 0) -> VerifyResult:
    return VerifyResult(False, size, seq, problem, checkpoints)


# One stored entry as the verifier reads it: (seq, at as the canonical time string, actor, action,
# object, details text, prev_hash, hash).
Row = tuple[int, str, str, str, str, str, str, str]


def entry_row(entry: Entry) -> Row:
    e = entry
    try:
        at = format_time(e.at)
    except ValueError:  # a naive time was never written by append: its hash will not match
        at = e.at.isoformat()
    return (e.seq, at, e.actor, e.action, e.object, e.details, e.prev_hash, e.hash)


@dataclass(frozen=True, slots=True)
class SpanResult:
    """What `check_span` found in one span of the log."""

    last: int  # seq of the last entry found good (lo - 1 when none)
    bad_seq: int | None = None
    problem: str | None = None
    checked: int = 0  # signed checkpoints whose head matched inside the span


def _why_hash_differs(details: str) -> str:
    try:
        parse_details(details)
    except ValueError as exc:
        return f"entry is malformed: {exc}"
    return "hash does not match the entry's contents (edited)"


def check_span(
    rows: Iterable[Row], lo: int, hi: int | None, prev: str, heads: Mapping[int, list[str]]
) -> SpanResult:
    """Check the entries `lo`..`hi` (None: up to the last row) given in seq order, `prev` being
    the stored hash of entry lo - 1 (GENESIS for lo = 1); `heads` maps checkpoint sizes to their
    signed head hashes.

    Each entry is checked against the stored previous one — seq is the next number, prev_hash is
    the previous entry's stored hash, hash = SHA-256(prev_hash ‖ body) — so spans can be checked
    independently (and in parallel): the first bad entry is the same as when recomputing the
    chain from genesis, since every entry before it has a stored hash equal to the recomputed one.
    """
    sha256, fromhex = hashlib.sha256, bytes.fromhex
    expected, checked = lo, 0
    cp_sizes = sorted(size for size in heads if size >= lo and (hi is None or size <= hi))
    cp_sizes.reverse()
    next_cp = cp_sizes.pop() if cp_sizes else -1
    for seq, at, actor, action, obj, details, prev_hash, stored in rows:
        if seq != expected:
            what = "missing (deleted)" if seq > expected else "out of order"
            return SpanResult(
                expected - 1, expected, f"entry {expected} is {what}: next seq is {seq}"
            )
        if prev_hash != prev:
            problem = "prev_hash does not match the previous entry's hash"
            return SpanResult(seq - 1, seq, problem, checked)
        try:
            digest = sha256(fromhex(prev_hash) + body_json(seq, at, actor, action, obj, details))
        except (ValueError, TypeError) as exc:
            return SpanResult(seq - 1, seq, f"entry is malformed: {exc}", checked)
        if digest.hexdigest() != stored:
            return SpanResult(seq - 1, seq, _why_hash_differs(details), checked)
        if seq == next_cp:
            for head in heads[seq]:
                if head != stored:
                    problem = f"entry {seq} differs from the signed checkpoint of size {seq}"
                    return SpanResult(seq, seq, problem, checked)
                checked += 1
            next_cp = cp_sizes.pop() if cp_sizes else -1
        prev, expected = stored, seq + 1
    if hi is not None and expected <= hi:
        return SpanResult(expected - 1, expected, f"entry {expected} is missing (deleted)", checked)
    return SpanResult(expected - 1, None, None, checked)


def signed_heads(
    notes: Sequence[str], public_key: Ed25519PublicKey | None
) -> dict[int, list[str]] | VerifyResult:
    """Checkpoint size -> head hashes of the notes whose signature verifies; the failure otherwise
    (a bad signature, or notes without a key to check them)."""
    heads: dict[int, list[str]] = {}
    for note in notes:
        if public_key is None:
            return _bad(0, None, "checkpoints given but no public key to verify them")
        try:
            checkpoint = verify_checkpoint(note, public_key)
        except CheckpointError as exc:
            return _bad(0, None, str(exc))
        heads.setdefault(checkpoint.size, []).append(checkpoint.head_hash)
    return heads


def combine(
    spans: Iterable[SpanResult],
    heads: Mapping[int, list[str]],
    progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """The verdict over consecutive spans (in order) and the signed checkpoint heads."""
    checked = 0
    for head in heads.get(0, []):
        if head != GENESIS:
            return _bad(0, None, "checkpoint of size 0 has a head hash other than genesis")
        checked += 1
    size = 0
    for span in spans:
        checked += span.checked
        if span.bad_seq is not None:
            return _bad(span.last, span.bad_seq, span.problem or "", checked)
        size = span.last
        if progress is not None:
            progress(size)
    beyond = [n for n in heads if n > size]
    if beyond:
        return _bad(
            size,
            size + 1,
            f"log truncated: a signed checkpoint has {max(beyond)} entries, the log only {size}",
            checked,
        )
    return VerifyResult(True, size, None, None, checked)


def verify(
    entries: Iterable[Entry],
    checkpoints: Sequence[str] = (),
    public_key: Ed25519PublicKey | None = None,
) -> VerifyResult:
    """Recompute the chain over `entries` (in seq order, streamed) and check each signed
    checkpoint note against it; the first problem found, with the first bad entry's seq."""
    heads = signed_heads(checkpoints, public_key)
    if isinstance(heads, VerifyResult):
        return heads
    rows = (entry_row(e) for e in entries)
    return combine([check_span(rows, 1, None, GENESIS, heads)], heads)
