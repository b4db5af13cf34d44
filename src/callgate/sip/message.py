"""SIP messages: a strict parser and a serializer (RFC 3261 §7, §18.3, §20).

Written here rather than taken from a library: docs/sip.md, "Choosing the stack", shows the
Python SIP stacks accepting RFC 4475 torture messages that a server must refuse. Every input is
hostile: sizes are bounded before anything is split, and a message that cannot be understood
raises `SipParseError` carrying the precise response (400 with a reason naming the fault, 505
for another SIP version, 513 when too large) — never another exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_MESSAGE = 16 * 1024  # bytes, head and body (RFC 3261 §18.1.1: UDP stays under the MTU)
MAX_HEAD = 8 * 1024
MAX_HEADERS = 64
MAX_BODY = 8 * 1024
MAX_CSEQ = (1 << 31) - 1  # RFC 3261 §8.1.1.5: "MUST be expressible as a 32-bit unsigned integer
#                          … less than 2**31"
VERSION = "SIP/2.0"

# RFC 3261 §7.3.3 compact forms.
COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via",
    "x": "session-expires",  # RFC 4028 §4
}  # fmt: skip
REQUIRED = ("to", "from", "cseq", "call-id", "max-forwards", "via")  # RFC 3261 §8.1.1
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")  # RFC 3261 §25.1 token
_URI = re.compile(r"^(sips?|tel):[^\s<>\"]+$", re.IGNORECASE)
_CANONICAL = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "max-forwards": "Max-Forwards", "record-route": "Record-Route",
}  # fmt: skip


class SipParseError(ValueError):
    """The message cannot be processed; `status` and `reason` are the response to send."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Headers:
    """Header fields in order; names compared case-insensitively, compact forms expanded."""

    fields: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        key = COMPACT.get(name.lower(), name.lower())
        for k, v in self.fields:
            if k == key:
                return v
        return None

    def all(self, name: str) -> list[str]:
        key = COMPACT.get(name.lower(), name.lower())
        return [v for k, v in self.fields if k == key]

    def add(self, name: str, value: str) -> None:
        self.fields.append((name.lower(), value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = name.lower()
        self.fields = [(k, v) for k, v in self.fields if k != key]


@dataclass(slots=True)
class SipRequest:
    method: str
    uri: str
    headers: Headers
    body: bytes = b""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("cseq") or "")


@dataclass(slots=True)
class SipResponse:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""


SipMessage = SipRequest | SipResponse


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN.match(parts[1]):
        raise SipParseError("Bad CSeq")
    if len(parts[0]) > 10 or int(parts[0]) > MAX_CSEQ:  # RFC 4475 §3.1.2.4 scalar02
        raise SipParseError("CSeq number out of range")
    return int(parts[0]), parts[1]


def _unfold(head: str) -> list[str]:
    """Header lines with continuation lines joined (RFC 3261 §7.3.1)."""
    lines: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t"):
            if not lines:
                raise SipParseError("Continuation line before any header")
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def _headers(lines: list[str]) -> Headers:
    if len(lines) > MAX_HEADERS:
        raise SipParseError("Too many header fields", 513)
    headers = Headers()
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            raise SipParseError("Malformed header line")  # RFC 4475 §3.1.2.1 badinv01
        key = COMPACT.get(name.lower(), name.lower())
        value = " ".join(value.split())  # collapse LWS
        if key in ("via", "record-route", "route") or (
            key == "contact" and not value.startswith("*")
        ):
            for part in _split_commas(value):
                headers.add(key, part)
        else:
            headers.add(key, value)
    return headers


def _split_commas(value: str) -> list[str]:
    """A comma-separated header value split outside quotes and <> (RFC 3261 §7.3.1)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = angle = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch in "<>" and not quoted:
            angle = ch == "<"
        elif ch == "," and not quoted and not angle:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _start_line(line: str) -> tuple[str, str, str]:
    parts = line.split(" ")
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != VERSION:
            raise SipParseError("Version Not Supported", 505)
        if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise SipParseError("Bad status code")
        return "", code, reason
    if len(parts) != 3:  # RFC 3261 §7.1: exactly single spaces
        raise SipParseError("Malformed request line")
    method, uri, version = parts
    if not _TOKEN.match(method):
        raise SipParseError("Bad method")
    if version != VERSION:  # RFC 4475 §3.1.2.16 badvers
        raise SipParseError("Version Not Supported", 505)
    if not _URI.match(uri):  # RFC 4475 §3.1.2.11 ltgtruri, unknown schemes
        raise SipParseError("Bad Request-URI")
    return method, uri, version


def _content_length(headers: Headers, available: int, stream: bool) -> int:
    raw = headers.get("content-length")
    if raw is None:
        if stream:  # RFC 3261 §18.3: mandatory over stream transports
            raise SipParseError("Content-Length required")
        return available
    if not raw.isdigit() or len(raw) > 9:  # RFC 4475 §3.1.2.3 ncl
        raise SipParseError("Bad Content-Length")
    length = int(raw)
    if not stream and length > available:  # RFC 4475 §3.1.2.2 clerr: the datagram lacks body
        raise SipParseError("Content-Length larger than the message")
    if length > MAX_BODY:
        raise SipParseError("Message Too Large", 513)
    return length


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """Head and the rest when the blank line has arrived; None when more is needed."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise SipParseError("Message Too Large", 513)
        return None
    if end > MAX_HEAD:
        raise SipParseError("Message Too Large", 513)
    return data[:end], data[end + 4 :]


def parse_head(head: bytes, stream: bool) -> tuple[str, str, str, Headers]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("Message is not UTF-8") from None
    if "\x00" in text or "\n" in text.replace("\r\n", ""):
        raise SipParseError("Bare CR, LF or NUL in head")
    first, *rest = text.split("\r\n", 1)
    method, uri_or_code, reason = _start_line(first)
    headers = _headers(_unfold(rest[0]) if rest else [])
    return method, uri_or_code, reason, headers


def body_length(headers: Headers, available: int, stream: bool) -> int:
    return _content_length(headers, available, stream)


def build(method: str, uri_or_code: str, reason: str, headers: Headers, body: bytes) -> SipMessage:
    """Validate the mandatory fields (RFC 3261 §8.1.1, RFC 4475 §3.1.2) and make the message."""
    for name in REQUIRED:
        if name == "max-forwards" and not method:
            continue  # responses need none
        if headers.get(name) is None:
            raise SipParseError(f"Missing {_CANONICAL.get(name, name.title())}")
    _number, cseq_method = parse_cseq(headers.get("cseq") or "")
    if method:
        max_forwards = headers.get("max-forwards") or ""
        if not max_forwards.isdigit() or int(max_forwards) > 255:
            raise SipParseError("Bad Max-Forwards")
        if cseq_method != method and method != "ACK":
            raise SipParseError("CSeq method does not match")  # RFC 4475 §3.1.2.17 mismatch01
        if method == "ACK" and cseq_method != "ACK":
            raise SipParseError("CSeq method does not match")
        return SipRequest(method, uri_or_code, headers, body)
    return SipResponse(int(uri_or_code), reason, headers, body)


def parse_datagram(data: bytes) -> SipMessage:
    """One UDP datagram: one whole message (RFC 3261 §18.3)."""
    if len(data) > MAX_MESSAGE:
        raise SipParseError("Message Too Large", 513)
    parts = split_head(data)
    if parts is None:
        raise SipParseError("Incomplete head")
    head, rest = parts
    method, uri_or_code, reason, headers = parse_head(head, stream=False)
    length = body_length(headers, len(rest), stream=False)
    return build(method, uri_or_code, reason, headers, rest[:length])  # extra bytes dropped


def canonical(name: str) -> str:
    return _CANONICAL.get(name, "-".join(p.capitalize() for p in name.split("-")))


def serialize(message: SipMessage) -> bytes:
    if isinstance(message, SipRequest):
        start = f"{message.method} {message.uri} {VERSION}"
    else:
        start = f"{VERSION} {message.status} {message.reason}"
    lines = [start]
    lines += [f"{canonical(k)}: {v}" for k, v in message.headers.fields if k != "content-length"]
    lines.append(f"Content-Length: {len(message.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + message.body
