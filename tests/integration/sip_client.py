"""A minimal SIP client for tests: REGISTER (and other requests) over a real UDP or TCP socket,
answering digest challenges (RFC 7616 §3.4.1, qop=auth). Responses are parsed with the edge's own
parser; the digest arithmetic is written out here, independently of callgate.sip.digest."""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
from dataclasses import dataclass, field

from callgate.sip.message import SipResponse, parse_datagram, split_head

HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass
class SipClient:
    server: tuple[str, int]
    transport: str = "UDP"  # or "TCP"
    sock: socket.socket = field(init=False)
    call_id: str = field(default_factory=lambda: secrets.token_hex(8))
    cseq: int = 0
    tag: str = field(default_factory=lambda: secrets.token_hex(4))

    def __post_init__(self) -> None:
        kind = socket.SOCK_DGRAM if self.transport == "UDP" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(10)
        self.sock.bind(("127.0.0.1", 0))
        if self.transport == "TCP":
            self.sock.connect(self.server)

    @property
    def local(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def close(self) -> None:
        self.sock.close()

    def request(
        self,
        method: str,
        aor: str,
        extra: list[str] | None = None,
        via_host: str | None = None,
    ) -> bytes:
        """A request to `aor` (sip:user@host) with a fresh branch and the next CSeq. `via_host`
        lets the Via claim another sent-by than the socket's (a phone behind NAT)."""
        self.cseq += 1
        host, port = self.local
        sent_by = f"{via_host or host}:{port if via_host is None else 5060}"
        lines = [
            f"{method} sip:{self.server[0]}:{self.server[1]} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {sent_by};branch=z9hG4bK{secrets.token_hex(6)};rport",
            f"From: <{aor}>;tag={self.tag}",
            f"To: <{aor}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            "Max-Forwards: 70",
            *(extra or []),
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def send(self, data: bytes) -> None:
        if self.transport == "UDP":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def receive(self) -> SipResponse:
        if self.transport == "UDP":
            data, _ = self.sock.recvfrom(65536)
        else:
            data = b""
            while (parts := split_head(data)) is None:
                data += self.sock.recv(4096)
            head, rest = parts
            length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(rest) < length:
                rest += self.sock.recv(4096)
            data = head + b"\r\n\r\n" + rest
        message = parse_datagram(data)
        assert isinstance(message, SipResponse)
        return message

    def exchange(self, data: bytes) -> SipResponse:
        self.send(data)
        return self.receive()


def challenge_for(response: SipResponse, algorithm: str) -> dict[str, str]:
    """The fields of the WWW-Authenticate challenge for `algorithm`."""
    for value in response.headers.all("www-authenticate"):
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', value))
        if fields.get("algorithm") == algorithm:
            return fields
    raise AssertionError(f"no {algorithm} challenge in {response.headers.all('www-authenticate')}")


def authorization(
    challenge: dict[str, str],
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    realm: str | None = None,
) -> str:
    algorithm = challenge["algorithm"]
    h = HASHES[algorithm]
    realm = realm or challenge["realm"]
    nonce, cnonce, count = challenge["nonce"], secrets.token_hex(4), f"{nc:08x}"
    ha1 = h(f"{username}:{realm}:{password}".encode()).hexdigest()
    ha2 = h(f"{method}:{uri}".encode()).hexdigest()
    answer = h(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Authorization: Digest username="{username}", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", response="{answer}", algorithm={algorithm}, qop=auth, nc={count}, '
        f'cnonce="{cnonce}"'
    )
