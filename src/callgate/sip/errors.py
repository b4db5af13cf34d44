"""Answering what could not be parsed (RFC 3261 §8.2: a request that cannot be understood
gets 400 with a reason phrase naming the fault; responses are never answered).

The response needs the request's Via, From, To, Call-ID and CSeq (§8.2.6.2). They are read here
leniently, line by line, from the raw bytes; without a Via there is nowhere to send an answer and
the message is only counted.
"""

from __future__ import annotations

from callgate.sip.message import COMPACT, MAX_HEAD, Headers, SipParseError, SipResponse, serialize
from callgate.sip.via import parse_via

_COPIED = ("via", "from", "to", "call-id", "cseq")


def error_response(data: bytes, exc: SipParseError) -> bytes | None:
    """The response to a request that failed to parse, or None when it cannot be answered."""
    head = data[:MAX_HEAD].split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    if not lines or lines[0].startswith("SIP/") or " " not in lines[0]:
        return None
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = COMPACT.get(name.strip().lower(), name.strip().lower())
        if colon and key in _COPIED and "\x00" not in value:
            headers.add(key, " ".join(value.split())[:512])
    if headers.get("via") is None:
        return None
    try:
        parse_via(headers.all("via")[0])
    except SipParseError:
        return None
    return serialize(SipResponse(exc.status, exc.reason, headers))
