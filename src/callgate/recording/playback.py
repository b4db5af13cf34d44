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
ranges. `DecodedCache` keeps the last few decoded recordings (bounded in count, bytes and time)
so each range costs a slice, not a decode.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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


class FirstUse:
    """Which tickets were used already (so the first use is audited once); forgets expired ones."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def first(self, ticket: Ticket, now: float | None = None) -> bool:
        at = now if now is not None else time.time()
        with self._lock:
            for nonce in [n for n, expires in self._seen.items() if expires <= at]:
                del self._seen[nonce]
            if ticket.nonce in self._seen:
                return False
            self._seen[ticket.nonce] = ticket.expires
            return True


class DecodedCache:
    """The last decoded recordings: at most `entries`, `max_bytes` in all, each for `seconds`.
    One decode at a time per recording: a player's first few range requests wait for it."""

    def __init__(self, entries: int = 4, max_bytes: int = 256 << 20, seconds: float = 600) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._gates: dict[str, threading.Lock] = {}
        self._entries, self._max_bytes, self._seconds = entries, max_bytes, seconds
        self._lock = threading.Lock()

    def get(self, recording_id: str, decode: Callable[[], bytes]) -> bytes:
        with self._lock:
            kept = self._fresh(recording_id)
            if kept is not None:
                return kept
            gate = self._gates.setdefault(recording_id, threading.Lock())
        with gate:
            with self._lock:
                kept = self._fresh(recording_id)
            if kept is not None:
                return kept
            try:
                data = decode()
            finally:
                with self._lock:
                    self._gates.pop(recording_id, None)
            with self._lock:
                if len(data) <= self._max_bytes:
                    self._items[recording_id] = (time.monotonic(), data)
                    self._items.move_to_end(recording_id)
                    while len(self._items) > self._entries or self._size() > self._max_bytes:
                        self._items.popitem(last=False)
            return data

    def _fresh(self, recording_id: str) -> bytes | None:
        kept = self._items.get(recording_id)
        if kept is None or time.monotonic() - kept[0] >= self._seconds:
            return None
        self._items.move_to_end(recording_id)
        return kept[1]

    def _size(self) -> int:
        return sum(len(data) for _, data in self._items.values())
