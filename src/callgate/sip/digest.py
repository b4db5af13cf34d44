"""Digest authentication for SIP, server side (RFC 3261 §22.4, RFC 8760, RFC 7616 §3.4).

We challenge with SHA-256 first and MD5 second (RFC 8760 §2.3: one WWW-Authenticate per
algorithm, preferred first), always with `qop="auth"`, and require `qop=auth` in the answer: the
nonce count then lets us refuse a replayed Authorization header (RFC 7616 §3.4: a nonce-count
not greater than the last one seen for that nonce is a replay).

A nonce is `<hex time>.<random>.<HMAC>`: its lifetime is checked from the time inside it, its
MAC proves we issued it, and a bounded table of issued nonces holds the last nonce-count seen.
A nonce that expired or fell out of the table gets a fresh challenge with `stale=true`
(RFC 7616 §3.3), so a phone re-answers without asking its user again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

ALGORITHMS = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
NONCE_TTL = 300.0  # seconds
MAX_NONCES = 50_000
MAX_AUTH_HEADER = 2048
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), what a credential keeps instead of its password."""
    return ALGORITHMS[algorithm](f"{username}:{realm}:{password}".encode()).hexdigest()


def response_for(creds: Credentials, method: str, stored_ha1: str) -> str:
    """The expected `response` for qop=auth (RFC 7616 §3.4.1)."""
    hash_fn = ALGORITHMS[creds.algorithm]
    ha2 = hash_fn(f"{method}:{creds.uri}".encode()).hexdigest()
    text = f"{stored_ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:auth:{ha2}"
    return hash_fn(text.encode()).hexdigest()


class Verdict(Enum):
    OK = "ok"
    STALE = "stale"  # expired or forgotten nonce: challenge again with stale=true
    REPLAY = "replay"  # nonce-count not increasing
    BAD = "bad"  # wrong response, unknown user, wrong realm or algorithm


@dataclass(frozen=True, slots=True)
class Credentials:
    """An Authorization header's fields (RFC 3261 §25.1 digest-response)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    qop: str | None
    nc: str | None
    cnonce: str | None


def digest_params(value: str) -> dict[str, str] | None:
    """The parameters of a `Digest …` header value (RFC 3261 §25.1 auth-param: token or quoted
    string, names case-insensitive), or None when it is not one or is malformed."""
    if len(value) > MAX_AUTH_HEADER:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None:
            return None
        key, raw = match.group(1).lower(), match.group(2)
        if key in params:
            return None  # a repeated parameter is ambiguous: refuse rather than pick one
        params[key] = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\") if raw[:1] == '"' else raw
        position = match.end()
    return params


def parse_authorization(value: str) -> Credentials | None:
    """The Digest credentials of an Authorization header, or None when malformed."""
    params = digest_params(value)
    if params is None:
        return None
    try:
        return Credentials(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"].lower(),
            algorithm=params.get("algorithm", "MD5").upper(),
            qop=params.get("qop"),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
        )
    except KeyError:
        return None


class DigestAuth:
    """Issues challenges and checks answers for one realm."""

    def __init__(
        self,
        realm: str,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        ttl: float = NONCE_TTL,
        max_nonces: int = MAX_NONCES,
    ) -> None:
        unknown = set(algorithms) - set(ALGORITHMS)
        if unknown or not algorithms:
            raise ValueError(f"digest algorithms: {sorted(unknown)} not among {list(ALGORITHMS)}")
        self.realm = realm
        self.algorithms = tuple(algorithms)
        self._key = secrets.token_bytes(32)
        self._ttl = ttl
        self._max = max_nonces
        self._issued: OrderedDict[str, int] = OrderedDict()  # nonce -> last nonce-count

    def _mac(self, stamp: str, salt: str) -> str:
        message = f"{stamp}.{salt}.{self.realm}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def new_nonce(self, now: float) -> str:
        stamp, salt = f"{int(now):x}", secrets.token_hex(8)
        nonce = f"{stamp}.{salt}.{self._mac(stamp, salt)}"
        self._issued[nonce] = 0
        while len(self._issued) > self._max:
            self._issued.popitem(last=False)
        return nonce

    def challenges(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate values in our order of preference (RFC 8760 §2.3), one nonce."""
        nonce = self.new_nonce(now)
        extra = ", stale=true" if stale else ""
        return [
            f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={name}, qop="auth"{extra}'
            for name in self.algorithms
        ]

    def nonce_fresh(self, nonce: str, now: float) -> bool:
        """We issued `nonce`, it is in the table and not older than the TTL."""
        stamp, _, rest = nonce.partition(".")
        salt, _, mac = rest.partition(".")
        try:
            issued = int(stamp, 16)
        except ValueError:
            return False
        if not hmac.compare_digest(mac, self._mac(stamp, salt)):
            return False
        return 0 <= now - issued <= self._ttl and nonce in self._issued

    def verify(
        self, creds: Credentials, method: str, stored_ha1: str | None, now: float
    ) -> Verdict:
        """Check `creds` for a request with `method`; `stored_ha1` is the credential's
        H(username:realm:password) for `creds.algorithm`, None when there is no such user."""
        if (
            creds.algorithm not in self.algorithms
            or creds.realm != self.realm
            or stored_ha1 is None
        ):
            return Verdict.BAD
        if creds.qop != "auth" or creds.nc is None or creds.cnonce is None:
            return Verdict.BAD  # we offer only qop=auth: its nonce-count stops replays
        if not self.nonce_fresh(creds.nonce, now):
            return Verdict.STALE
        try:
            count = int(creds.nc, 16)
        except ValueError:
            return Verdict.BAD
        expected = response_for(creds, method, stored_ha1)
        if not hmac.compare_digest(expected, creds.response):
            return Verdict.BAD
        if count <= self._issued[creds.nonce]:
            return Verdict.REPLAY
        self._issued[creds.nonce] = count
        return Verdict.OK
