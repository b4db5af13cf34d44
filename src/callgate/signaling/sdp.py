"""Relay-only enforcement on SDP and trickled ICE candidates (RFC 8839 §5.1 candidate grammar).

    candidate-attribute = "candidate" ":" foundation SP component-id SP transport SP priority SP
                          connection-address SP port SP "typ" SP cand-type *(SP extension)

The server does not trust a client to honour `iceTransportPolicy: "relay"`: when relay-only applies,
it removes every candidate that is not `typ relay`, and every relay candidate whose address is not
one of our relays, before an SDP or a candidate reaches the other party. Default connection
addresses (`c=`, `a=rtcp:`) that are not our relays are masked to the unspecified address so
they do not leak a private address either. Everything else, line endings included, is kept.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})


def _normal_ip(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def normalize_addresses(addresses: Collection[str]) -> frozenset[str]:
    """Our relay addresses in canonical text form (invalid entries are dropped)."""
    return frozenset(ip for ip in map(_normal_ip, addresses) if ip is not None)


def _fields(line: str) -> list[str] | None:
    """The fields of a candidate line (`a=candidate:…` or `candidate:…`), or None if it is not one."""
    text = line.strip()
    if text.startswith("a="):
        text = text[2:]
    if not text.startswith("candidate:"):
        return None
    return text[len("candidate:") :].split()


def candidate_type(line: str) -> str | None:
    """`host`/`srflx`/`prflx`/`relay` for a candidate line, None if it is not a valid candidate."""
    fields = _fields(line)
    if fields is None or len(fields) < 8 or fields[6] != "typ":
        return None
    kind = fields[7].lower()
    return kind if kind in CANDIDATE_TYPES else None


def candidate_address(line: str) -> str | None:
    """The connection address of a candidate line, as written (IP or mDNS name)."""
    fields = _fields(line)
    if fields is None or len(fields) < 8:
        return None
    return fields[4]


def filter_candidate(candidate: str, relay_only: bool, relay_addresses: Collection[str]) -> bool:
    """Whether a trickled candidate may be forwarded; `""` (end-of-candidates) always may."""
    if not relay_only or not candidate.strip():
        return True
    if candidate_type(candidate) != "relay":
        return False
    address = _normal_ip(candidate_address(candidate) or "")
    return address is not None and address in normalize_addresses(relay_addresses)


def _mask_connection(line: str, relays: frozenset[str]) -> str:
    """`c=IN IP4 10.0.0.5` → `c=IN IP4 0.0.0.0` unless the address is one of our relays."""
    parts = line.split(" ")
    if len(parts) < 3 or parts[-2] not in ("IP4", "IP6"):
        return line
    address = _normal_ip(parts[-1].split("/", 1)[0])
    if address is None or address in relays or ipaddress.ip_address(address).is_unspecified:
        return line
    parts[-1] = "0.0.0.0" if parts[-2] == "IP4" else "::"
    return " ".join(parts)


def filter_sdp(sdp: str, relay_only: bool, relay_addresses: Collection[str]) -> str:
    """The SDP with non-relay and foreign relay candidates removed (unchanged unless relay_only)."""
    if not relay_only:
        return sdp
    relays = normalize_addresses(relay_addresses)
    kept: list[str] = []
    for line in sdp.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        if body.startswith("a=candidate:"):
            if candidate_type(body) != "relay":
                continue
            address = _normal_ip(candidate_address(body) or "")
            if address is None or address not in relays:
                continue
        elif body.startswith(("c=", "a=rtcp:")):
            body = _mask_connection(body, relays)
        kept.append(body + ending)
    return "".join(kept)


def relay_candidates(sdp: str) -> list[str]:
    """ "ip:port" of every UDP relay candidate in an SDP, in order, without repeats: the relayed
    transport addresses the call will use, by which its relay sessions are found later."""
    found: list[str] = []
    for line in sdp.splitlines():
        fields = _fields(line)
        if fields is None or len(fields) < 8 or fields[6] != "typ" or fields[7] != "relay":
            continue
        ip = _normal_ip(fields[4])
        if ip is None or fields[2].lower() != "udp" or not fields[5].isdigit():
            continue
        address = f"{ip}:{int(fields[5])}"
        if address not in found:
            found.append(address)
    return found
