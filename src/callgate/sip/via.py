"""Via headers: where responses go (RFC 3261 §18.2.1, §18.2.2) and RFC 3581 rport."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from callgate.sip.message import Headers, SipParseError

_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+)\s*(;.*)?$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


def _host_port(sent_by: str) -> tuple[str, int | None]:
    if sent_by.startswith("["):
        host, _, rest = sent_by[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = sent_by.partition(":")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise SipParseError("Bad Via sent-by port")
    return host, int(port) if port else None


def parse_via(value: str) -> Via:
    match = _VIA.match(value)
    if match is None:
        raise SipParseError("Malformed Via")
    host, port = _host_port(match.group(2))
    params: dict[str, str | None] = {}
    for item in (match.group(3) or "").split(";")[1:]:
        key, eq, val = item.strip().partition("=")
        params[key.strip().lower()] = val.strip() if eq else None
    return Via(match.group(1).upper(), host, port, params)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def stamp_received(headers: Headers, source: tuple[str, int]) -> Via:
    """Add `received` (and `rport` when asked, RFC 3581 §4) to the top Via, as a server must
    (RFC 3261 §18.2.1). Returns the top Via as stamped."""
    values = headers.all("via")
    if not values:
        raise SipParseError("Missing Via")
    via = parse_via(values[0])
    ip, port = source
    params = dict(via.params)
    if "rport" in params:
        params["rport"] = str(port)
        params["received"] = ip
    elif via.host != ip or not _is_ip(via.host):
        params["received"] = ip
    stamped = Via(via.transport, via.host, via.port, params)
    top = _format(stamped)
    rest = values[1:]
    headers.remove("via")
    for value in [top, *rest]:
        headers.add("via", value)
    return stamped


def _format(via: Via) -> str:
    host = f"[{via.host}]" if ":" in via.host and not via.host.startswith("[") else via.host
    sent_by = f"{host}:{via.port}" if via.port else host
    params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in via.params.items())
    return f"SIP/2.0/{via.transport} {sent_by}{params}"


def response_target(via: Via, source: tuple[str, int]) -> tuple[str, int]:
    """Where a UDP response goes: the source address and port with rport (RFC 3581 §4), else
    the received address and the sent-by port (RFC 3261 §18.2.2)."""
    if via.params.get("rport"):
        return source
    return source[0], via.port or 5060
