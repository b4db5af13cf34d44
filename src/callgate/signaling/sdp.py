"""Relay-only enforcement on SDP and trickled ICE candidates (RFC 8839 §5.1, RFC 8866 §5).

The server does not trust a client to honour `iceTransportPolicy: "relay"`: when relay-only
applies, an SDP or a candidate reaches the other party only after this filter, which

- keeps a candidate only if it parses strictly (`candidate.parse_candidate`: single spaces, exact
  case), is `typ relay` and its address is one of our relays, and writes it back from its fields
  with `raddr`/`rport` rewritten to `0.0.0.0 0` and unknown extensions dropped;
- drops every other line that names a candidate in any spelling (`a=Candidate:`, a leading space,
  a tab…) and every `a=remote-candidates` line (it lists the other side's addresses);
- drops any line that is not `<lower-case letter>=…` (RFC 8866 §5: the type is one
  case-significant character, no whitespace around `=`) or holds a character that is not
  printable (tab, no-break space, Unicode line separator…), so nothing hides behind them;
- rewrites `o=` (always) and `c=` / `a=rtcp:` (unless the address is one of our relays) to the
  unspecified address, rebuilt from single-space fields so a trailing space or a tab cannot slip
  an address past the mask; an `o=`/`c=` line that does not parse becomes a neutral one.

Lines are split on LF only (what SDP parsers split on; a CR before it is kept), so the filter never
sees fewer lines than the receiving agent. Without relay-only the SDP is forwarded unchanged.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Collection

from callgate.signaling.candidate import Candidate, parse_candidate

_LINE = re.compile(r"[a-z]=")
# Attribute names whose lines carry candidate addresses; compared after case-folding and
# removing every kind of whitespace, so spelling variants are recognised (and dropped).
_CANDIDATE_NAMES = frozenset({"candidate", "remote-candidates"})
_CANDIDATE_PREFIXES = ("a=candidate:", "candidate:")  # the only lines parse_candidate reads


@functools.lru_cache(maxsize=1024)  # the same few relay addresses in every SDP: parse once
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


def candidate_type(line: str) -> str | None:
    """`host`/`srflx`/`prflx`/`relay` for a candidate line, None if it is not a valid candidate."""
    parsed = parse_candidate(line)
    return None if parsed is None else parsed.kind


def candidate_address(line: str) -> str | None:
    """The connection address of a candidate line, as written (IP or mDNS name)."""
    parsed = parse_candidate(line)
    return None if parsed is None else parsed.address


def _allowed_relay(line: str, relays: frozenset[str]) -> Candidate | None:
    parsed = parse_candidate(line)
    if parsed is None or parsed.kind != "relay" or _normal_ip(parsed.address) not in relays:
        return None
    return parsed.masked()


def filter_candidate(
    candidate: str, relay_only: bool, relay_addresses: Collection[str]
) -> str | None:
    """The trickled candidate to forward (rewritten under relay-only), None to drop it;
    `""` (end-of-candidates) is always forwarded."""
    if not relay_only or candidate == "":
        return candidate
    allowed = _allowed_relay(candidate, normalize_addresses(relay_addresses))
    return None if allowed is None else str(allowed)


def _unspecified(addrtype: str) -> str:
    return "::" if addrtype == "IP6" else "0.0.0.0"


def _masked_address(nettype: str, addrtype: str, address: str, relays: frozenset[str]) -> str:
    """`IN IP4 <address>` with the address kept only if it is one of our relays."""
    if nettype != "IN" or addrtype not in ("IP4", "IP6"):
        return "IN IP4 0.0.0.0"
    if _normal_ip(address.split("/", 1)[0]) in relays:
        return f"IN {addrtype} {address}"
    return f"IN {addrtype} {_unspecified(addrtype)}"


def _mask_origin(value: str) -> str:
    """`o=<user> <sess-id> <sess-version> IN IP4 <address>` (RFC 8866 §5.2), address masked."""
    fields = value.split()
    if len(fields) != 6 or fields[3] != "IN" or fields[4] not in ("IP4", "IP6"):
        return "o=- 0 0 IN IP4 0.0.0.0"
    return "o=" + " ".join([*fields[:5], _unspecified(fields[4])])


def _mask_connection(value: str, relays: frozenset[str]) -> str:
    """`c=IN IP4 <address>` (RFC 8866 §5.7) masked unless the address is one of our relays."""
    fields = value.split()
    if len(fields) != 3:
        return "c=IN IP4 0.0.0.0"
    return "c=" + _masked_address(fields[0], fields[1], fields[2], relays)


def _mask_rtcp(value: str, relays: frozenset[str]) -> str | None:
    """`a=rtcp:<port> [IN IP4 <address>]` (RFC 3605 §2.1); None (drop) if it does not parse."""
    fields = value.split()
    if not fields or not (fields[0].isascii() and fields[0].isdigit()):
        return None
    if len(fields) == 1:
        return f"a=rtcp:{fields[0]}"
    if len(fields) != 4:
        return None
    return f"a=rtcp:{fields[0]} " + _masked_address(fields[1], fields[2], fields[3], relays)


def _filter_line(body: str, relays: frozenset[str]) -> str | None:
    """One SDP line (without its line ending) as forwarded under relay-only; None drops it."""
    if body == "":
        return body
    if _LINE.match(body) is None or not body.isprintable():
        return None
    kind, value = body[0], body[2:]
    if kind == "o":
        return _mask_origin(value)
    if kind == "c":
        return _mask_connection(value, relays)
    if kind != "a":
        return body
    name = "".join(value.split(":", 1)[0].split()).casefold()
    if name in _CANDIDATE_NAMES:
        allowed = _allowed_relay(body, relays) if name == "candidate" else None
        return None if allowed is None else str(allowed)
    if name == "rtcp":
        return _mask_rtcp(value[len("rtcp:") :], relays) if value.startswith("rtcp:") else None
    return body


def filter_sdp(sdp: str, relay_only: bool, relay_addresses: Collection[str]) -> str:
    """The SDP as the other party may see it (unchanged unless relay_only)."""
    if not relay_only:
        return sdp
    relays = normalize_addresses(relay_addresses)
    kept: list[str] = []
    lines = sdp.split("\n")
    last = len(lines) - 1
    for index, line in enumerate(lines):
        ending = "\n" if index != last else ""
        if line.endswith("\r"):
            line, ending = line[:-1], "\r" + ending
        filtered = _filter_line(line, relays)
        if filtered is not None:
            kept.append(filtered + ending)
    return "".join(kept)


def relay_candidates(sdp: str) -> list[str]:
    """ "ip:port" of every UDP relay candidate in an SDP, in order, without repeats: the relayed
    transport addresses the call will use, by which its relay sessions are found later."""
    found: list[str] = []
    for line in sdp.splitlines():
        if not line.startswith(_CANDIDATE_PREFIXES):  # what parse_candidate refuses first
            continue
        parsed = parse_candidate(line)
        if parsed is None or parsed.kind != "relay" or parsed.transport.lower() != "udp":
            continue
        ip = _normal_ip(parsed.address)
        if ip is None:
            continue
        address = f"{ip}:{parsed.port}"
        if address not in found:
            found.append(address)
    return found
