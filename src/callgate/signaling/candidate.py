"""A strict ICE candidate parser (RFC 8839 §5.1), for the relay-only filter.

    candidate-attribute = "candidate" ":" foundation SP component-id SP transport SP
                          priority SP connection-address SP port SP cand-type
                          [SP rel-addr] [SP rel-port] *(SP cand-extension)
    foundation = 1*32ice-char        ice-char = ALPHA / DIGIT / "+" / "/"
    component-id = 1*3DIGIT          priority = 1*10DIGIT          port = 1*5DIGIT
    cand-type = "typ" SP candidate-types     rel-addr = "raddr" SP connection-address
    rel-port = "rport" SP port       cand-extension = extension-att-name SP extension-att-value

Separators are exactly one SP (0x20): a tab, a no-break space, a leading or a trailing space or
two spaces in a row make the line not a candidate. Keywords (`candidate`, `typ`, `raddr`, `rport`,
the candidate types) are matched in the lower case every ICE agent writes, not case-folded: a
filter that reads a line differently from the agent that receives it is a bypass, so anything
unusual is dropped rather than interpreted. A parsed candidate is written back from its fields
(`str(candidate)`), never forwarded as the client wrote it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})
# Extensions browsers and aioice write; anything else is dropped from a forwarded candidate.
KNOWN_EXTENSIONS = frozenset({"tcptype", "generation", "ufrag", "network-id", "network-cost"})
_FOUNDATION = re.compile(r"[A-Za-z0-9+/]{1,32}")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 8866 §9 token
_VCHARS = re.compile(r"[\x21-\x7e]+")
_ADDRESS = re.compile(r"[0-9A-Za-z.:\-]{1,255}")  # IPv4, IPv6 (never bracketed), FQDN (mDNS .local)
_TRANSPORTS = frozenset({"udp", "UDP", "tcp", "TCP"})


@dataclass(frozen=True)
class Candidate:
    prefix: str  # "a=" in an SDP line, "" in a trickled candidate
    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    kind: str
    raddr: str | None = None
    rport: int | None = None
    extensions: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        fields = [
            f"{self.prefix}candidate:{self.foundation}",
            str(self.component),
            self.transport,
            str(self.priority),
            self.address,
            str(self.port),
            "typ",
            self.kind,
        ]
        if self.raddr is not None:
            fields += ["raddr", self.raddr]
        if self.rport is not None:
            fields += ["rport", str(self.rport)]
        for name, value in self.extensions:
            fields += [name, value]
        return " ".join(fields)

    def masked(self) -> Candidate:
        """This candidate with `raddr`/`rport` rewritten to 0.0.0.0 0 (RFC 8839 §5.1 allows
        it for privacy) and only the known extensions kept."""
        return Candidate(  # not dataclasses.replace: it costs 3 µs per call, this 1
            self.prefix,
            self.foundation,
            self.component,
            self.transport,
            self.priority,
            self.address,
            self.port,
            self.kind,
            None if self.raddr is None else "0.0.0.0",
            None if self.rport is None else 0,
            tuple(pair for pair in self.extensions if pair[0] in KNOWN_EXTENSIONS),
        )


def _number(text: str, digits: int, maximum: int) -> int | None:
    if not (1 <= len(text) <= digits and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= maximum else None


def parse_candidate(line: str) -> Candidate | None:
    """The candidate on an `a=candidate:` SDP line or in a trickled `candidate:` string; None
    when the text does not follow the grammar exactly."""
    prefix = "a=" if line.startswith("a=") else ""
    text = line[len(prefix) :]
    if not text.startswith("candidate:"):
        return None
    fields = text[len("candidate:") :].split(" ")
    if len(fields) < 8 or len(fields) % 2:
        return None
    foundation, component, transport, priority, address, port, typ, kind = fields[:8]
    numbers = (_number(component, 3, 256), _number(priority, 10, 2**32 - 1))
    port_number = _number(port, 5, 65535)
    if (
        _FOUNDATION.fullmatch(foundation) is None
        or None in numbers
        or port_number is None
        or transport not in _TRANSPORTS
        or _ADDRESS.fullmatch(address) is None
        or typ != "typ"
        or kind not in CANDIDATE_TYPES
    ):
        return None
    rest = fields[8:]
    raddr: str | None = None
    rport: int | None = None
    if rest[:1] == ["raddr"]:
        raddr = rest[1]
        if _ADDRESS.fullmatch(raddr) is None:
            return None
        rest = rest[2:]
    if rest[:1] == ["rport"]:
        rport = _number(rest[1], 5, 65535)
        if rport is None:
            return None
        rest = rest[2:]
    extensions = tuple(zip(rest[0::2], rest[1::2], strict=True))
    for name, value in extensions:
        if _TOKEN.fullmatch(name) is None or _VCHARS.fullmatch(value) is None:
            return None
        if name in ("raddr", "rport", "typ"):
            return None
    return Candidate(
        prefix,
        foundation,
        numbers[0] or 0,
        transport,
        numbers[1] or 0,
        address,
        port_number,
        kind,
        raddr,
        rport,
        extensions,
    )
