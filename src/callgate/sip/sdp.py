"""SDP for plain RTP phones (RFC 4566, offer/answer RFC 3264): one audio stream, G.711 or G.722.

A phone's offer is read for its connection address, audio port and payload types; we answer with
the first of PCMU (0), PCMA (8) and G.722 (9) it lists — codecs browsers and aiortc take too, so
the WebRTC side forwards them unchanged (G.722's RTP clock is 8 kHz for its 16 kHz samples, RFC
3551 §4.5.2; the anchor transcodes for a party that has none of them, media/transcode.py). `RTP/SAVP` is taken with SDES keys (RFC 4568 `a=crypto`, suite
AES_CM_128_HMAC_SHA1_80, the one every SRTP phone and trunk has): we answer with our own key;
so is RTP/AVP offering that as an RFC 5939 capability (best-effort SRTP, `Capabilities`).
Anything else (no audio, only other codecs, SRTP without a usable key, IPv6 addresses we do not
serve) is `SdpError`, answered `488 Not Acceptable Here` (RFC 3261 §21.4.26).

Hold: a stream at `c=IN IP4 0.0.0.0` (RFC 2543's hold, which RFC 3264 §8.4 says an answerer must
still take) is `held`: it is accepted in an offer or an answer, and nothing is sent to it.
RTCP goes to the stream's `a=rtcp` port and address when it has one (RFC 3605 §2.1), else to the
RTP port + 1 (RFC 3550 §11); media_peers.py judges both destinations.

DTMF: a `telephone-event/8000` payload type in the offer (RFC 4733 §7.1.1) is kept
(`AudioOffer.events`) and answered with the same number and the events 0-15 (`a=fmtp:PT 0-15`),
the keys of a phone's keypad; our own offers list it as EVENTS_PT.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from dataclasses import dataclass

MAX_SDP = 8 * 1024
CODECS = {0: "pcmu", 8: "pcma", 9: "g722"}  # static payload types we forward (RFC 3551 §6)
RTPMAPS = {"pcmu": "PCMU/8000", "pcma": "PCMA/8000", "g722": "G722/8000"}  # RFC 3551 §6
SUITE = "AES_CM_128_HMAC_SHA1_80"  # RFC 4568 §6.2.1
KEY_SALT = 30  # bytes of inline key ‖ salt for SUITE
HOLD_ADDRESS = "0.0.0.0"  # RFC 2543 hold (RFC 3264 §8.4)
EVENTS_PT = 101  # the dynamic payload type our offers give telephone-event (RFC 4733)
# RFC 3264 §6.1: the answer's direction for each offered one (hold: §8.4)
DIRECTIONS = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class SdpError(ValueError):
    """The SDP cannot be used (the reason is safe to send as a SIP reason phrase)."""

    warning: str | None = None  # a Warning header value saying why (RFC 3261 §20.43)


@dataclass(frozen=True, slots=True)
class Crypto:
    """One `a=crypto` line we can use (RFC 4568 §9.1)."""

    tag: int
    key_salt: bytes  # the sender's master key ‖ salt
    # offered as an RFC 5939 capability: the `a=acfg` value our answer names it by (§3.5.2)
    acfg: str | None = None


def answer_key(theirs: Crypto) -> Crypto:
    """Our own fresh key for the answer to `theirs`: its tag (RFC 4568 §5.1.2), its `acfg`."""
    return Crypto(theirs.tag, secrets.token_bytes(KEY_SALT), theirs.acfg)


@dataclass(frozen=True, slots=True)
class AudioOffer:
    address: str  # where the phone wants RTP
    port: int
    payload_types: tuple[int, ...]
    crypto: Crypto | None = None  # RTP/SAVP: the key the phone sends with
    events: int | None = None  # the payload type of telephone-event/8000, when offered
    direction: str = "sendrecv"  # the offerer's a=sendrecv|sendonly|recvonly|inactive
    rtcp: tuple[str, int] | None = None  # its a=rtcp (RFC 3605), else RTCP goes to port + 1

    @property
    def held(self) -> bool:
        """`c=0.0.0.0`: send it neither RTP nor RTCP (RFC 3264 §8.4)."""
        return self.address == HOLD_ADDRESS

    def choose(self) -> str:
        """Our codec: the first the phone lists that we forward."""
        for pt in self.payload_types:
            if pt in CODECS:
                return CODECS[pt]
        raise SdpError("No common codec (PCMU, PCMA or G.722)")

    def ours(self) -> tuple[str, ...]:
        """The codecs we forward that the SDP lists, in its order."""
        return tuple(dict.fromkeys(CODECS[pt] for pt in self.payload_types if pt in CODECS))


def parse_audio(sdp: bytes) -> AudioOffer:
    """The first audio stream of a session description."""
    if len(sdp) > MAX_SDP:
        raise SdpError("SDP too large")
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    session_address: str | None = None
    media_address: str | None = None
    audio: tuple[int, tuple[int, ...]] | None = None
    secure = False
    crypto: Crypto | None = None
    in_audio = False
    rtcp: str | None = None  # the audio stream's a=rtcp value
    rtpmaps: set[int] = set()  # telephone-event/8000 payload types of the audio stream
    capabilities = Capabilities()  # RFC 5939 a=tcap/acap/pcfg of the audio stream, a=creq
    session = True  # before the first m= line
    directions = {"session": "sendrecv", "media": ""}  # RFC 4566 §6: media level wins
    for line in text.replace("\r\n", "\n").split("\n"):
        kind, _, value = line.partition("=")
        if kind == "m":
            session = False
            if audio is not None:
                break  # only the first audio stream is ours
            parts = value.split()
            in_audio = len(parts) >= 4 and parts[0] == "audio"
            if in_audio:
                if parts[2] not in ("RTP/AVP", "RTP/SAVP"):
                    raise SdpError("Only RTP/AVP or RTP/SAVP audio is supported")
                secure = parts[2] == "RTP/SAVP"
                port = _integer(parts[1], "Bad audio port")
                if not 0 < port < 65536:
                    raise SdpError("Bad audio port")
                types = tuple(_integer(p, "Bad payload type") for p in parts[3:])
                if not all(t < 128 for t in types):
                    raise SdpError("Bad payload type")
                audio = (port, types)
        elif kind == "a" and in_audio and value.startswith("crypto:") and crypto is None:
            crypto = _crypto(value.removeprefix("crypto:"))
        elif kind == "a" and value.strip() in DIRECTIONS and audio is None and not in_audio:
            directions["session"] = value.strip()
        elif kind == "a" and in_audio and value.strip() in DIRECTIONS:
            directions["media"] = value.strip()
        elif kind == "a" and in_audio and value.startswith("rtcp:") and rtcp is None:
            rtcp = value.removeprefix("rtcp:")
        elif kind == "a" and value.startswith("creq:") and (session or in_audio):
            capabilities.require(value.removeprefix("creq:"))
        elif kind == "a" and in_audio and capabilities.take(value):
            pass  # a capability or potential configuration (RFC 5939), kept
        elif kind == "a" and in_audio and value.startswith("rtpmap:"):
            number, _, name = value.removeprefix("rtpmap:").partition(" ")
            if name.strip().lower() == "telephone-event/8000" and _digits(number):
                rtpmaps.add(_integer(number, "Bad a=rtpmap payload type"))
        elif kind == "c":
            address = _connection(value)
            if audio is None and not in_audio:
                session_address = address
            elif in_audio:
                media_address = address
    if audio is None:
        raise SdpError("No audio stream")
    found = media_address or session_address
    if found is None:
        raise SdpError("No connection address")
    if secure and crypto is None:
        raise SdpError(f"RTP/SAVP without an a=crypto {SUITE} key")
    if not secure:  # RTP/AVP, perhaps with RTP/SAVP as a capability (best-effort SRTP)
        crypto = capabilities.srtp()
        secure = crypto is not None
    events = next((pt for pt in audio[1] if pt in rtpmaps and pt >= 96), None)
    direction = directions["media"] or directions["session"]
    control = None if rtcp is None else _rtcp(rtcp, found)
    return AudioOffer(
        found, audio[0], audio[1], crypto if secure else None, events, direction, control
    )


def _rtcp(value: str, address: str) -> tuple[str, int]:
    """`a=rtcp:PORT [IN IP4 ADDRESS]` (RFC 3605 §2.1); without an address, the stream's."""
    parts = value.split()
    port = _integer(parts[0] if parts else "", "Bad a=rtcp port")
    if not 0 < port < 65536:
        raise SdpError("Bad a=rtcp port")
    if len(parts) == 1:
        return address, port
    if len(parts) != 4:
        raise SdpError("Bad a=rtcp attribute")
    return _connection(" ".join(parts[1:])), port


def _crypto(value: str) -> Crypto | None:
    """`tag suite inline:KEY[|lifetime][|MKI]`: ours when the suite is SUITE and the key
    decodes to 30 bytes; lifetimes and MKIs are not supported (None)."""
    parts = value.split()
    if len(parts) < 3 or not _digits(parts[0]) or parts[1] != SUITE:
        return None
    if len(parts) > 3 or not parts[2].startswith("inline:") or "|" in parts[2]:
        return None  # session parameters, lifetime or MKI: not supported
    try:
        key = base64.b64decode(parts[2].removeprefix("inline:"), validate=True)
    except (binascii.Error, ValueError):
        return None
    tag = _integer(parts[0], "Bad a=crypto tag")  # 1*9DIGIT (RFC 4568 §9.1)
    return Crypto(tag, key) if len(key) == KEY_SALT else None


def _digits(text: str) -> bool:
    """Whether `text` is an SDP integer we take: 1-9 ASCII digits (`str.isdigit` is also true
    for `²` and other Unicode digits, which `int` refuses, and for thousands of digits)."""
    return 0 < len(text) <= 9 and text.isascii() and text.isdigit()


def _integer(text: str, error: str) -> int:
    """Every integer the parser reads: `_digits`, else `SdpError(error)` (488, never a 500)."""
    if not _digits(text):
        raise SdpError(error)
    return int(text)


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] != "IP4":
        raise SdpError("Only IN IP4 connection addresses are supported")
    try:
        ipaddress.IPv4Address(parts[2])
    except ValueError:
        raise SdpError("Connection address is not an IPv4 address") from None
    return parts[2]


def audio_sdp(
    address: str,
    port: int,
    codec: str | tuple[str, ...],
    crypto: Crypto | None = None,
    events: int | None = None,
    direction: str = "sendrecv",
    origin: tuple[int, int] | None = None,
) -> bytes:
    """Our offer or answer: one audio stream at `address:port` with `codec` (an offer may list
    several, in our order of preference); with `crypto` (our
    key, the phone's tag) RTP/SAVP; with `events` telephone-event on that payload type (RFC 4733
    §7.1.1). `origin`: (session id, version) for a changed description of the same session
    (RFC 3264 §8: same id, version one higher), else a new session."""
    if direction not in DIRECTIONS:
        raise ValueError(f"bad direction {direction!r}")
    names = (codec,) if isinstance(codec, str) else codec
    numbers = {name: number for number, name in CODECS.items()}
    pts = [numbers[name] for name in names]
    formats = " ".join(str(pt) for pt in pts) + ("" if events is None else f" {events}")
    session, version = origin or (secrets.randbits(31), 1)
    lines = [
        "v=0",
        f"o=callgate {session} {version} IN IP4 {address}",
        "s=callgate",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} {'RTP/SAVP' if crypto else 'RTP/AVP'} {formats}",
        *(f"a=rtpmap:{numbers[name]} {RTPMAPS[name]}" for name in names),
        *(
            []
            if events is None
            else [f"a=rtpmap:{events} telephone-event/8000", f"a=fmtp:{events} 0-15"]
        ),
        "a=ptime:20",
        f"a={direction}",
    ]
    if crypto is not None:
        key = base64.b64encode(crypto.key_salt).decode()
        lines.append(f"a=crypto:{crypto.tag} {SUITE} inline:{key}")
        if crypto.acfg is not None:  # the offer's potential configuration we took (RFC 5939)
            lines.append(f"a=acfg:{crypto.acfg}")
    return ("\r\n".join(lines) + "\r\n").encode()


class Capabilities:
    """An audio stream's SDP capability negotiation (RFC 5939), read for one thing: best-effort
    SRTP, an RTP/AVP stream offering RTP/SAVP with an SDES key as a potential configuration:

        m=audio 4000 RTP/AVP 0
        a=tcap:1 RTP/SAVP
        a=acap:1 crypto:1 AES_CM_128_HMAC_SHA1_80 inline:…
        a=pcfg:1 t=1 a=1

    `srtp()` gives the key of the most preferred such configuration (the lowest number,
    §3.5.1) whose attribute list (one of its `|` alternatives) asks for exactly one capability,
    an `a=crypto` of ours; the answer then takes it (RTP/SAVP, our key, `a=acfg:1 t=1 a=1`,
    §3.6.2). Anything else — a configuration deleting attributes, needing other capabilities or
    extensions (`a=creq` beyond `cap-v0`, RFC 6871 media capabilities), capabilities at session
    level — is not taken: the stream is plain RTP/AVP, as to an answerer without RFC 5939."""

    MAX = 16  # capabilities of each kind kept (the SDP itself is at most MAX_SDP)

    def __init__(self) -> None:
        self.transports: dict[int, str] = {}  # a=tcap numbers (§3.4.2: one per listed profile)
        self.attributes: dict[int, str] = {}  # a=acap
        self.configurations: dict[int, str] = {}  # a=pcfg
        self.required: set[str] = set()  # a=creq option tags (§3.3.2)

    def require(self, tags: str) -> None:
        """An `a=creq` (§3.3.2): option tags the offer needs the answerer to know."""
        self.required.update(tag.strip() for tag in tags.split(","))

    def take(self, value: str) -> bool:
        """Whether `value` (an attribute's `name:value`) is one of ours, kept."""
        name, _, rest = value.partition(":")
        number, _, body = rest.strip().partition(" ")
        if name not in ("tcap", "acap", "pcfg"):
            return False
        if not _digits(number) or len(number) > 6:
            return True  # malformed: ignored
        kinds = {"tcap": self.transports, "acap": self.attributes, "pcfg": self.configurations}
        kept = kinds[name]
        if name == "tcap":
            for offset, profile in enumerate(body.split()[: self.MAX]):
                if len(self.transports) < self.MAX:
                    self.transports.setdefault(_integer(number, "Bad a=tcap") + offset, profile)
        elif len(kept) < self.MAX:
            kept.setdefault(_integer(number, f"Bad a={name}"), body.strip())
        return True

    def srtp(self) -> Crypto | None:
        if self.required - {"cap-v0"}:
            return None  # an extension we do not know is required: no capability negotiation
        for number in sorted(self.configurations):
            taken = self._configuration(number, self.configurations[number].split())
            if taken is not None:
                return taken
        return None

    def _configuration(self, number: int, parts: list[str]) -> Crypto | None:
        transport: int | None = None
        alternatives: list[str] = []
        for part in parts:
            kind, _, value = part.partition("=")
            if kind == "t":
                found = [_integer(t, "Bad a=pcfg") for t in value.split("|") if _digits(t)]
                transport = next((t for t in found if self.transports.get(t) == "RTP/SAVP"), None)
            elif kind == "a":
                alternatives = value.split("|")
            else:
                return None  # an extension configuration (RFC 6871 m=, …) we cannot honour
        if transport is None:
            return None
        for alternative in alternatives:
            if not _digits(alternative):  # deletions (-m:), several or optional capabilities
                continue
            value = self.attributes.get(_integer(alternative, "Bad a=pcfg"), "")
            crypto = _crypto(value.removeprefix("crypto:")) if value.startswith("crypto:") else None
            if crypto is not None:
                return Crypto(
                    crypto.tag, crypto.key_salt, f"{number} t={transport} a={alternative}"
                )
        return None
