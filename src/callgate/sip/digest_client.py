"""Digest authentication towards a carrier: the client side (RFC 3261 §22.2, §22.3; RFC 8760;
RFC 7616 §3.4).

A carrier that wants our trunk's credentials answers an INVITE with `401` (WWW-Authenticate)
or `407` (Proxy-Authenticate). We take the first challenge whose algorithm we know, in the order
the carrier sent them (RFC 8760 §2.4: the topmost one supported), answer with `qop=auth` when
offered (a fresh cnonce, nonce-count 1: each challenge is answered once) or in the RFC 2069 form
RFC 3261 §22.4 still allows when no qop is offered, and refuse `auth-int`-only challenges (we do
not hash bodies). The password never leaves this module except as the hashed response, and
`CarrierAuth`'s repr hides it, so it cannot reach a log line.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from callgate.sip.digest import ALGORITHMS, digest_params, ha1


@dataclass(frozen=True, slots=True)
class CarrierAuth:
    """The trunk's account at the carrier (`[[sip.trunks]]` username/password)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str
    qop: frozenset[str]
    opaque: str | None
    stale: bool


def parse_challenge(value: str) -> Challenge | None:
    """A `Digest` WWW-/Proxy-Authenticate value (RFC 3261 §25.1 challenge), or None."""
    params = digest_params(value)
    if params is None:
        return None
    if "realm" not in params or "nonce" not in params:
        return None
    qop = frozenset(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5").upper(),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def choose(values: Sequence[str]) -> Challenge | None:
    """The first challenge we can answer (known algorithm; qop auth or none)."""
    for value in values:
        challenge = parse_challenge(value)
        if challenge is None or challenge.algorithm not in ALGORITHMS:
            continue
        if challenge.qop and "auth" not in challenge.qop:
            continue  # auth-int only
        return challenge
    return None


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(challenge: Challenge, auth: CarrierAuth, method: str, uri: str) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` (RFC 7616 §3.4)."""
    hash_fn = ALGORITHMS[challenge.algorithm]
    secret = ha1(challenge.algorithm, auth.username, challenge.realm, auth.password)
    ha2 = hash_fn(f"{method}:{uri}".encode()).hexdigest()
    fields = [
        f"username={_quoted(auth.username)}",
        f"realm={_quoted(challenge.realm)}",
        f"nonce={_quoted(challenge.nonce)}",
        f"uri={_quoted(uri)}",
    ]
    if "auth" in challenge.qop:
        nc, cnonce = "00000001", secrets.token_hex(8)
        text = f"{secret}:{challenge.nonce}:{nc}:{cnonce}:auth:{ha2}"
        fields += ["qop=auth", f"nc={nc}", f"cnonce={_quoted(cnonce)}"]
    else:  # RFC 2069 form (RFC 3261 §22.4)
        text = f"{secret}:{challenge.nonce}:{ha2}"
    fields.insert(4, f"response={_quoted(hash_fn(text.encode()).hexdigest())}")
    fields.append(f"algorithm={challenge.algorithm}")
    if challenge.opaque is not None:
        fields.append(f"opaque={_quoted(challenge.opaque)}")
    return "Digest " + ", ".join(fields)
