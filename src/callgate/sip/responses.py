"""Building responses to requests (RFC 3261 §8.2.6)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from callgate.sip.message import Headers, SipRequest, SipResponse, serialize

SERVER = "callgate"
ALLOW = "OPTIONS, REGISTER"  # what the edge handles without calls
ALLOW_CALLS = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS, REGISTER"  # with a call handler


def response(
    request: SipRequest,
    status: int,
    reason: str,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    to_tag: str | None = None,
) -> SipResponse:
    """Via, From, Call-ID and CSeq copied; To copied with a tag added to final responses that
    lack one (§8.2.6.2)."""
    headers = Headers()
    for value in request.headers.all("via"):
        headers.add("via", value)
    to = request.headers.get("to") or ""
    if status >= 101 and ";tag=" not in to.replace(" ", "").lower():
        to += f";tag={to_tag or secrets.token_hex(6)}"
    headers.add("from", request.headers.get("from") or "")
    headers.add("to", to)
    headers.add("call-id", request.headers.get("call-id") or "")
    headers.add("cseq", request.headers.get("cseq") or "")
    headers.add("server", SERVER)
    for name, value in extra:
        headers.add(name, value)
    return SipResponse(status, reason, headers, body)


def encode(message: SipResponse) -> bytes:
    return serialize(message)
