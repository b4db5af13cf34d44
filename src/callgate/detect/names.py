"""Server names: the server_name of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3), read from a
TCP stream reassembled across segments or from QUIC CRYPTO frames (quic.py), and the calling
applications those names belong to.

Every length is checked against the bytes present: a truncated or hostile ClientHello yields None,
never an exception or a read past the end.
"""

from __future__ import annotations

HANDSHAKE = 22  # TLS record content type (RFC 8446 §5.1)
CLIENT_HELLO = 1  # handshake type (RFC 8446 §4)
SERVER_NAME = 0  # extension (RFC 6066 §3)
MAX_HELLO = 16 * 1024  # bytes of ClientHello buffered per flow (real ones: a few KB)

# Domain suffixes of calling services → our application names (the services' own domains, as
# their administrators' documentation lists them for firewall allow-lists).
APP_DOMAINS: tuple[tuple[str, str], ...] = (
    ("teams.microsoft.com", "Microsoft Teams/Skype"),
    ("teams.live.com", "Microsoft Teams/Skype"),
    ("skype.com", "Microsoft Teams/Skype"),
    ("skypeassets.com", "Microsoft Teams/Skype"),
    ("lync.com", "Microsoft Teams/Skype"),
    ("zoom.us", "Zoom"),
    ("zoom.com", "Zoom"),
    ("zoomgov.com", "Zoom"),
    ("webex.com", "Cisco Webex"),
    ("wbx2.com", "Cisco Webex"),
    ("meet.google.com", "Google Meet"),
    ("whatsapp.net", "WhatsApp"),
    ("whatsapp.com", "WhatsApp"),
    ("signal.org", "Signal"),
    ("telegram.org", "Telegram"),
    ("discord.com", "Discord"),
    ("discord.gg", "Discord"),
    ("discord.media", "Discord"),
    ("facetime.apple.com", "FaceTime"),
    ("viber.com", "Viber"),
    ("jitsi.net", "Jitsi"),
    ("8x8.vc", "Jitsi"),
    ("line.me", "LINE"),
    ("line-apps.com", "LINE"),
)


def app_from_name(name: str) -> str | None:
    """The calling application whose domain `name` is or is under, if any."""
    name = name.lower().rstrip(".")
    for suffix, app in APP_DOMAINS:
        if name == suffix or name.endswith("." + suffix):
            return app
    return None


def hello_from_records(stream: bytes) -> bytes | None:
    """The ClientHello handshake message carried by the TLS records at the start of `stream`
    (a message may span records, RFC 8446 §5.1); None until it is complete or if it is not one."""
    message = bytearray()
    pos = 0
    while pos + 5 <= len(stream):
        kind, major = stream[pos], stream[pos + 1]
        length = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if kind != HANDSHAKE or major != 3 or length == 0:
            return None
        message += stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(message) >= 4:
            if message[0] != CLIENT_HELLO:
                return None
            need = 4 + int.from_bytes(message[1:4], "big")
            if len(message) >= need:
                return bytes(message[:need])
    return None


def is_hello_start(payload: bytes) -> bool:
    """A TLS handshake record whose message is a ClientHello (the first segment of one)."""
    return len(payload) >= 6 and payload[0] == HANDSHAKE and payload[1] == 3 and payload[5] == 1


def server_name(hello: bytes) -> str | None:
    """The host_name of the server_name extension of a ClientHello handshake message."""
    if len(hello) < 4 or hello[0] != CLIENT_HELLO:
        return None
    end = min(len(hello), 4 + int.from_bytes(hello[1:4], "big"))
    pos = 4 + 2 + 32  # legacy_version, random
    pos = _skip(hello, pos, 1, end)  # legacy_session_id
    pos = _skip(hello, pos, 2, end)  # cipher_suites
    pos = _skip(hello, pos, 1, end)  # legacy_compression_methods
    if pos < 0 or pos + 2 > end:
        return None
    stop = min(end, pos + 2 + int.from_bytes(hello[pos : pos + 2], "big"))
    pos += 2
    while pos + 4 <= stop:
        kind = int.from_bytes(hello[pos : pos + 2], "big")
        size = int.from_bytes(hello[pos + 2 : pos + 4], "big")
        body = hello[pos + 4 : pos + 4 + size]
        if len(body) < size:
            return None
        if kind == SERVER_NAME:
            return _host_name(body)
        pos += 4 + size
    return None


def _skip(data: bytes, pos: int, width: int, end: int) -> int:
    """The position after a `width`-byte length-prefixed vector at `pos`; -1 when it overruns."""
    if pos < 0 or pos + width > end:
        return -1
    after = pos + width + int.from_bytes(data[pos : pos + width], "big")
    return after if after <= end else -1


def _host_name(body: bytes) -> str | None:
    """ServerNameList (RFC 6066 §3): the first host_name entry, if it is plain ASCII."""
    pos = 2
    while pos + 3 <= len(body):
        kind, size = body[pos], int.from_bytes(body[pos + 1 : pos + 3], "big")
        name = body[pos + 3 : pos + 3 + size]
        if len(name) < size:
            return None
        if kind == 0:
            text = name.decode("ascii", errors="replace")
            ok = text and all(c.isalnum() or c in "-._" for c in text)
            return text.lower() if ok else None
        pos += 3 + size
    return None


class HelloBuffer:
    """One flow's ClientHello being put back together: TLS records from TCP segments in order
    (a segment equal to the previous one is a retransmission and skipped), or QUIC CRYPTO frames by
    offset. At most MAX_HELLO bytes; `done` once a name was found or the bytes cannot be one."""

    __slots__ = ("crypto", "done", "last", "stream")

    def __init__(self) -> None:
        self.stream = bytearray()
        self.crypto: dict[int, bytes] = {}
        self.last = b""
        self.done = False

    def add_segment(self, payload: bytes) -> str | None:
        """The server name once the ClientHello is complete (None until then, or never)."""
        if self.done or payload == self.last:
            return None
        self.last = payload
        if not self.stream and not is_hello_start(payload):
            self.done = True
            return None
        self.stream += payload[: MAX_HELLO - len(self.stream)]
        hello = hello_from_records(bytes(self.stream))
        return self._finish(hello, len(self.stream) >= MAX_HELLO)

    def add_crypto(self, frames: list[tuple[int, bytes]]) -> str | None:
        """CRYPTO frame data by offset; the name once the message from offset 0 is complete."""
        if self.done:
            return None
        for offset, data in frames:
            if offset + len(data) <= MAX_HELLO:
                self.crypto.setdefault(offset, data)
        message = bytearray()
        while (part := self.crypto.get(len(message))) is not None and part:
            message += part
        if len(message) < 4 or message[0] != CLIENT_HELLO:
            return None
        need = 4 + int.from_bytes(message[1:4], "big")
        full = need <= len(message)
        return self._finish(bytes(message[:need]) if full else None, need > MAX_HELLO)

    def _finish(self, hello: bytes | None, hopeless: bool) -> str | None:
        if hello is None:
            self.done = hopeless
            return None
        self.done = True
        self.stream, self.crypto = bytearray(), {}
        return server_name(hello)
