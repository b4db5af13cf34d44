"""A minimal SIP client for tests: REGISTER (and other requests) over a real UDP or TCP socket,
answering digest challenges (RFC 7616 §3.4.1, qop=auth). Responses are parsed with the edge's own
parser; the digest arithmetic is written out here, independently of callgate.sip.digest."""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import ssl
from dataclasses import dataclass, field

import av
import numpy as np
import numpy.typing as npt

from callgate.sip.message import SipRequest, SipResponse, parse_datagram, serialize, split_head
from callgate.sip.responses import response

HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass
class SipClient:
    server: tuple[str, int]
    transport: str = "UDP"  # or "TCP", or "TLS" (verified against `ca`)
    ca: str | None = None
    bind: str = "127.0.0.1"  # another loopback address plays another host (a carrier)
    sock: socket.socket = field(init=False)
    call_id: str = field(default_factory=lambda: secrets.token_hex(8))
    cseq: int = 0
    tag: str = field(default_factory=lambda: secrets.token_hex(4))

    def __post_init__(self) -> None:
        kind = socket.SOCK_DGRAM if self.transport == "UDP" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(30)  # generous: a loaded machine answers late
        self.sock.bind((self.bind, 0))
        if self.transport == "TLS":
            context = ssl.create_default_context(cafile=self.ca)
            self.sock = context.wrap_socket(self.sock, server_hostname=self.server[0])
        if self.transport != "UDP":
            self.sock.connect(self.server)

    def answer(self, invite: SipRequest, body: bytes, tag: str, user: str = "x") -> None:
        """Answer `invite` 200 OK with the SDP `body`, this client as the dialog's Contact."""
        extra = [("Contact", f"<sip:{user}@{self.local[0]}:{self.local[1]}>"),
                 ("Content-Type", "application/sdp")]  # fmt: skip
        self.send(serialize(response(invite, 200, "OK", extra, body=body, to_tag=tag)))

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
        *,
        to: str | None = None,
        body: bytes = b"",
        cseq: int | None = None,
    ) -> bytes:
        """A request from `aor` (sip:user@host) to `to` (default: `aor`, as REGISTER has it)
        with a fresh branch and the next CSeq. `via_host` lets the Via claim another sent-by
        than the socket's (a phone behind NAT)."""
        if cseq is None:
            self.cseq += 1
        host, port = self.local
        sent_by = f"{via_host or host}:{port if via_host is None else 5060}"
        target = to or f"sip:{self.server[0]}:{self.server[1]}"
        lines = [
            f"{method} {target} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {sent_by};branch=z9hG4bK{secrets.token_hex(6)};rport",
            f"From: <{aor}>;tag={self.tag}",
            f"To: <{to or aor}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq or self.cseq} {method}",
            "Max-Forwards: 70",
            *(extra or []),
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

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

    def until_final(self) -> tuple[list[int], SipResponse]:
        """The statuses of the responses to our request up to its final one (>= 200), and
        that final response."""
        statuses: list[int] = []
        while not statuses or statuses[-1] < 200:
            reply = self.receive()
            statuses.append(reply.status)
        return statuses, reply

    def receive_request(self) -> SipRequest:
        """A request the server sent us (UDP)."""
        data, _ = self.sock.recvfrom(65536)
        message = parse_datagram(data)
        assert isinstance(message, SipRequest), message
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


def ulaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    """G.711 µ-law (ITU-T G.711), written out for the tests."""
    s = samples.astype(np.int32)
    sign = (s < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.abs(s), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8))


def ulaw_decode(data: bytes) -> npt.NDArray[np.int32]:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude)


def tone_ulaw(frequency: float, first_sample: int, count: int = 160) -> bytes:
    t = (np.arange(count) + first_sample) / 8000
    return ulaw_encode((np.sin(2 * np.pi * frequency * t) * 8000).astype(np.int16))


class G722Tone:
    """A tone as consecutive 20 ms G.722 frames (320 samples at 16 kHz: 160 bytes, 160 RTP
    ticks, RFC 3551 §4.5.2), one encoder for the stream (ADPCM keeps state)."""

    def __init__(self, frequency: float) -> None:
        self.frequency, self.sent = frequency, 0
        self._encoder = av.CodecContext.create("g722", "w")
        self._encoder.sample_rate, self._encoder.layout, self._encoder.format = 16000, "mono", "s16"

    def next(self) -> bytes:
        t = (np.arange(320) + self.sent) / 16000
        samples = (np.sin(2 * np.pi * self.frequency * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16000, self.sent
        self.sent += 320
        return b"".join(bytes(p) for p in self._encoder.encode(frame))


def g722_decode(data: bytes) -> npt.NDArray[np.int32]:
    """G.722 payloads, concatenated, as 16 kHz samples."""
    decoder = av.CodecContext.create("g722", "r")
    decoder.sample_rate, decoder.layout = 16000, "mono"
    frames = decoder.decode(av.Packet(data))
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int32)


def dominant_hz(samples: npt.NDArray[np.int32], rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft((samples - samples.mean()) * np.hanning(samples.size)))
    spectrum[0] = 0.0
    return float(np.fft.rfftfreq(samples.size, 1.0 / rate)[int(np.argmax(spectrum))])
