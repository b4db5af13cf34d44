"""Playback URLs for the browser's <audio> element, and the decoded audio they serve.

The console signs in with a bearer token kept in sessionStorage; an <audio> element cannot send
that header, and the token must never travel in a URL (it opens every API for its lifetime). So a
compliance officer asks for a *playback ticket* (`POST /api/recordings/{id}/playback`, bearer
auth, audited): an HMAC-SHA256 over (recording id, the officer's handle, expiry, nonce) keyed with
a key derived from the recording master key (HKDF-SHA256), so every server holding the master key
accepts it and nothing else can mint one. It opens one recording's audio, read-only, for
`TICKET_SECONDS`, for that officer only (the account is checked again at each use: disabled, or no
longer compliance/admin → refused). The server's access log is off, so the ticket is not logged
by callgate; a ticket that leaks anyway gives no more than that recording's audio until it
expires.

Decoding a recording to WAV costs a full pass over it; a player seeking asks for many byte
ranges: recording/decoded.py keeps the decoded files, and `byte_range` reads the one range asked
for. Each ticket may make `StreamRate`'s requests; its uses are audited (`Uses`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from callgate.rate import TokenBucket, Window

TICKET_SECONDS = 300
MAX_TICKET_CHARS = 512
_INFO = b"callgate recording playback ticket v1"


class TicketError(ValueError):
    """A ticket that is malformed, forged, for another recording, or expired."""


@dataclass(frozen=True, slots=True)
class Ticket:
    recording_id: str
    handle: str
    expires: int  # Unix seconds
    nonce: str


def ticket_key(master_key: bytes) -> bytes:
    """The HMAC key of playback tickets, derived from the recording master key (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master_key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Strict unpadded base64url (RFC 4648 §5): any other character, or a text that does not
    encode back to itself (unused bits set, a lone character), is refused."""
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def mint(recording_id: str, handle: str, now: float | None = None) -> Ticket:
    expires = int(now if now is not None else time.time()) + TICKET_SECONDS
    return Ticket(recording_id, handle, expires, secrets.token_hex(8))


def encode(key: bytes, ticket: Ticket) -> str:
    body = json.dumps([ticket.recording_id, ticket.handle, ticket.expires, ticket.nonce],
                      separators=(",", ":")).encode()  # fmt: skip
    return f"{_b64(body)}.{_b64(hmac.new(key, body, hashlib.sha256).digest())}"


def verify(key: bytes, text: str, recording_id: str, now: float | None = None) -> Ticket:
    """The ticket `text` stands for, if it is genuine, for `recording_id` and unexpired."""
    if len(text) > MAX_TICKET_CHARS or text.count(".") != 1:
        raise TicketError("the playback ticket is malformed")
    body_text, mac_text = text.split(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise TicketError("the playback ticket is malformed") from None
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise TicketError("the playback ticket is not genuine")
    fields = json.loads(body)  # ours: signed above
    ticket = Ticket(str(fields[0]), str(fields[1]), int(fields[2]), str(fields[3]))
    if ticket.recording_id != recording_id:
        raise TicketError("the playback ticket is for another recording")
    if ticket.expires <= (now if now is not None else time.time()):
        raise TicketError("the playback ticket has expired; ask for a new one")
    return ticket


class Uses:
    """Which tickets were used already, and from which client addresses, so that the first use
    of each ticket, and its first use from every other address (a leaked ticket replayed
    elsewhere), are audited once; forgets expired tickets. `mark` only after the audit entry
    is written: a use whose entry failed is still a first use at the next try."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, set[str]]] = {}
        self._lock = threading.Lock()

    def known(self, ticket: Ticket, address: str, now: float | None = None) -> bool:
        at = now if now is not None else time.time()
        with self._lock:
            for nonce in [n for n, (expires, _) in self._seen.items() if expires <= at]:
                del self._seen[nonce]
            seen = self._seen.get(ticket.nonce)
            return seen is not None and address in seen[1]

    def first_address(self, ticket: Ticket) -> bool:
        """No use of the ticket was marked yet (from any address)."""
        with self._lock:
            return ticket.nonce not in self._seen

    def mark(self, ticket: Ticket, address: str) -> None:
        with self._lock:
            self._seen.setdefault(ticket.nonce, (ticket.expires, set()))[1].add(address)


class StreamRate:
    """Requests a ticket may make: a burst of `burst`, then `rate` a second (a seeking player
    asks for a few ranges at a time; nothing legitimate asks for more)."""

    def __init__(self, burst: int = 60, rate: float = 2.0) -> None:
        self._burst, self._rate = burst, rate
        self._buckets: dict[str, tuple[int, TokenBucket]] = {}  # nonce -> (expires, bucket)
        self._lock = threading.Lock()

    def take(self, ticket: Ticket, now: float | None = None) -> float:
        """0 when the request may go on, else the seconds until it may."""
        at = now if now is not None else time.monotonic()
        wall = time.time() if now is None else now
        with self._lock:
            for nonce in [n for n, (expires, _) in self._buckets.items() if expires <= wall]:
                del self._buckets[nonce]
            kept = self._buckets.get(ticket.nonce)
            bucket = kept[1] if kept else TokenBucket(self._rate, self._burst, at)
            self._buckets[ticket.nonce] = (ticket.expires, bucket)
            return 0.0 if bucket.take(at) else bucket.wait()


class LogLimit:
    """At most `count` log lines a `period` seconds; how many were held back is told with the
    next one let through."""

    def __init__(self, count: int = 10, period: float = 60.0) -> None:
        self._count, self._window, self.suppressed = count, Window(period), 0

    def allow(self, now: float | None = None) -> bool:
        if self._window.hit(now if now is not None else time.monotonic()) > self._count:
            self.suppressed += 1
            return False
        return True

    def held_back(self) -> int:
        """How many were held back since the last line let through (and resets the count)."""
        held, self.suppressed = self.suppressed, 0
        return held


MAX_RANGE_CHARS = 200  # a longer Range header is ignored (RFC 9110 §14.2 lets a server ignore it)
_RANGE = re.compile(r"bytes=(?:(\d+)-(\d*)|-(\d+))", re.IGNORECASE)
Unsatisfiable = Literal["unsatisfiable"]


def byte_range(header: str | None, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """The one byte range (first, last inclusive) a Range header asks of `size` bytes, None to
    send the whole representation, "unsatisfiable" for 416. RFC 9110 §14.1.1: the range unit is
    case-insensitive; `bytes=-` and `bytes=5-3` are invalid and, as any header we do not act on
    (several ranges, another unit, over-long), ignored (§14.2)."""
    if header is None or len(header) > MAX_RANGE_CHARS:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:  # the last `suffix` bytes (§14.1.3)
        length = int(suffix)
        return (max(0, size - length), size - 1) if length > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1
