"""One SRTP session's packets protected and unprotected in a buffer of our own (docs/recording.md,
"Per-packet path").

pylibsrtp's `Session.protect` / `unprotect`, per packet: a type check, a new `int *`, a copy of
the packet into the session's buffer, the libsrtp call, and a copy of the result out as `bytes`.
The anchor then slices the payload out of that copy, and on the way out joins a header and the
payload into another `bytes` for `protect` to copy in again. `SrtpIo` calls the same libsrtp
functions through pylibsrtp's own cffi binding (the session's libsrtp context, no second one),
with one buffer and one `int *` that live as long as the leg: a packet is copied in once,
decrypted in place, its header read and its payload copied out where they lie; an outgoing
packet is assembled in the buffer, encrypted in place and copied out once.

Nothing here outlives a call: every method finishes with the buffer before it returns, so a
packet handed on (as `bytes`) never aliases it. When pylibsrtp's binding is not what this module
knows, `SrtpIo` goes through the session's public methods instead (slower, same results).
"""

from __future__ import annotations

import struct
from typing import Any

import pylibsrtp

BUFFER_BYTES = 2048  # above any UDP datagram the relay delivers (MTU-sized) plus the trailer
TRAILER_MAX = 16 + 128  # SRTP_MAX_TAG_LEN + SRTP_MAX_MKI_LEN: what protect may add (RFC 3711 §3.1)
SEQ_TS = struct.Struct("!HI")  # RTP sequence number and timestamp, at offset 2 (RFC 3550 §5.1)


def _binding() -> tuple[Any, Any] | None:
    try:
        from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    if not all(hasattr(lib, name) for name in ("srtp_protect", "srtp_unprotect")):
        return None
    return ffi, lib


_BINDING = _binding()
_ERRORS: list[str] = list(getattr(pylibsrtp, "ERRORS", []))  # libsrtp's status texts, by code


class SrtpIo:
    """Protect and unprotect with one pylibsrtp `Session`, in `buffer` (module docstring)."""

    __slots__ = ("_cdata", "_context", "_length", "_protect", "_session", "_unprotect", "buffer")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # holds the libsrtp context
        context = getattr(session, "_srtp", None)
        if _BINDING is None or context is None:
            self._cdata: Any = None
            self.buffer: Any = bytearray(BUFFER_BYTES)
            return
        ffi, lib = _BINDING
        self._context = context[0]
        self._cdata = ffi.new("char[]", BUFFER_BYTES)
        self.buffer = ffi.buffer(self._cdata)
        self._length = ffi.new("int *")
        self._protect = lib.srtp_protect
        self._unprotect = lib.srtp_unprotect

    @property
    def direct(self) -> bool:
        """Does this go straight to libsrtp (not through pylibsrtp's methods)?"""
        return self._cdata is not None

    def unprotect(self, data: bytes | memoryview) -> int:
        """Authenticate and decrypt the SRTP packet `data` (RFC 3711 §3.3) into `buffer`: the
        length of the RTP packet there, or -1 when libsrtp refuses it (authentication, replay)
        or it is too long."""
        size = len(data)
        if size > BUFFER_BYTES - TRAILER_MAX:
            return -1
        if self._cdata is None:
            try:
                plain = self._session.unprotect(bytes(data))
            except pylibsrtp.Error:
                return -1
            self.buffer[: len(plain)] = plain
            return len(plain)
        self.buffer[0:size] = data
        length = self._length
        length[0] = size
        if self._unprotect(self._context, self._cdata, length) != 0:
            return -1
        return int(length[0])

    def protect(self, header: bytes | bytearray, payload: bytes, seq: int, timestamp: int) -> bytes:
        """The SRTP packet (RFC 3711 §3.1) for `header` (a template: its sequence number and
        timestamp are set here) followed by `payload`. Raises pylibsrtp.Error as
        `Session.protect` does, ValueError when it would not fit."""
        head = len(header)
        size = head + len(payload)
        if size > BUFFER_BYTES - TRAILER_MAX:
            raise ValueError("packet is too long")
        buffer = self.buffer
        buffer[0:head] = header
        buffer[head:size] = payload
        SEQ_TS.pack_into(buffer, 2, seq, timestamp)
        if self._cdata is None:
            return self._session.protect(bytes(buffer[:size]))
        length = self._length
        length[0] = size
        status = self._protect(self._context, self._cdata, length)
        if status != 0:
            raise pylibsrtp.Error(_ERRORS[status] if 0 < status < len(_ERRORS) else str(status))
        return buffer[0 : length[0]]  # type: ignore[no-any-return]
