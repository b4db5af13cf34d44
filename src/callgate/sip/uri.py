"""Name-addr / addr-spec values of To, From and Contact (RFC 3261 §20.10, §25.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from callgate.sip.message import SipParseError

_SIP_URI = re.compile(r"^(sips?):(?:([^@;?]+)@)?([^;?]+)(.*)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class NameAddr:
    uri: str
    params: dict[str, str | None]  # header parameters (after the URI), names lowered


def parse_name_addr(value: str) -> NameAddr:
    value = value.strip()
    if "<" in value:
        start, end = value.find("<"), value.find(">")
        if end < start:
            raise SipParseError("Malformed address")
        uri, rest = value[start + 1 : end].strip(), value[end + 1 :]
    else:
        uri, _, rest = value.partition(";")
        uri, rest = uri.strip(), ";" + rest if rest else ""
    if not uri or any(c.isspace() for c in uri):
        raise SipParseError("Malformed address")
    params: dict[str, str | None] = {}
    for item in rest.split(";")[1:]:
        key, eq, val = item.strip().partition("=")
        if key:
            params[key.strip().lower()] = val.strip().strip('"') if eq else None
    return NameAddr(uri, params)


@dataclass(frozen=True, slots=True)
class SipUri:
    scheme: str
    user: str | None
    host: str  # host[:port]
    params: str  # the rest (";transport=tcp…"), as written


def parse_sip_uri(uri: str) -> SipUri:
    match = _SIP_URI.match(uri)
    if match is None:
        raise SipParseError("Not a SIP URI")
    scheme, user, host, rest = match.groups()
    return SipUri(scheme.lower(), user, host, rest)
