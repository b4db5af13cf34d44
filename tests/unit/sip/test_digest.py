"""Digest authentication (RFC 8760 / RFC 7616 computations, our nonce rules)."""

from __future__ import annotations

import hashlib

import pytest

from callgate.sip.digest import (
    NONCE_TTL,
    Credentials,
    DigestAuth,
    Verdict,
    ha1,
    parse_authorization,
    response_for,
)

REALM = "callgate.test"


def answer(
    auth: DigestAuth, algorithm: str, password: str, nonce: str, nc: str = "00000001",
    method: str = "REGISTER", user: str = "alice.desk", realm: str = REALM,
) -> str:  # fmt: skip
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]
    a1 = h(f"{user}:{realm}:{password}".encode()).hexdigest()
    a2 = h(f"{method}:sip:{REALM}".encode()).hexdigest()
    resp = h(f"{a1}:{nonce}:{nc}:abc:auth:{a2}".encode()).hexdigest()
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="sip:{REALM}", '
        f'response="{resp}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="abc"'
    )


def nonce_of(challenge: str) -> str:
    return challenge.split('nonce="')[1].split('"')[0]


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_example(algorithm: str, expected: str) -> None:
    creds = Credentials(
        username="Mufasa",
        realm="http-auth@example.org",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        uri="/dir/index.html",
        response="",
        algorithm=algorithm,
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    stored = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert response_for(creds, "GET", stored) == expected


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_good_answer_then_replay_then_next_count(algorithm: str) -> None:
    auth = DigestAuth(REALM)
    challenges = auth.challenges(1000.0)
    assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]
    nonce = nonce_of(challenges[0])
    stored = ha1(algorithm, "alice.desk", REALM, "pw")
    creds = parse_authorization(answer(auth, algorithm, "pw", nonce))
    assert creds is not None
    assert auth.verify(creds, "REGISTER", stored, 1001.0) is Verdict.OK
    assert auth.verify(creds, "REGISTER", stored, 1002.0) is Verdict.REPLAY
    again = parse_authorization(answer(auth, algorithm, "pw", nonce, nc="00000002"))
    assert again is not None and auth.verify(again, "REGISTER", stored, 1003.0) is Verdict.OK


def test_wrong_password_realm_method_and_forged_or_old_nonce() -> None:
    auth = DigestAuth(REALM)
    nonce = nonce_of(auth.challenges(1000.0)[0])
    stored = ha1("MD5", "alice.desk", REALM, "pw")

    def verdict(header: str, method: str = "REGISTER", now: float = 1001.0) -> Verdict:
        creds = parse_authorization(header)
        assert creds is not None
        return auth.verify(creds, method, stored, now)

    assert verdict(answer(auth, "MD5", "wrong", nonce)) is Verdict.BAD
    assert verdict(answer(auth, "MD5", "pw", nonce, realm="other")) is Verdict.BAD
    assert verdict(answer(auth, "MD5", "pw", nonce), method="INVITE") is Verdict.BAD
    assert verdict(answer(auth, "MD5", "pw", nonce), now=1000.0 + NONCE_TTL + 1) is Verdict.STALE
    forged = nonce[:-4] + "0000"
    assert verdict(answer(auth, "MD5", "pw", forged)) is Verdict.STALE
    other_server = nonce_of(DigestAuth(REALM).challenges(1000.0)[0])
    assert verdict(answer(auth, "MD5", "pw", other_server)) is Verdict.STALE
    no_qop = answer(auth, "MD5", "pw", nonce).replace("qop=auth, ", "")
    assert verdict(no_qop) is Verdict.BAD


def test_forgotten_nonces_are_stale() -> None:
    auth = DigestAuth(REALM, max_nonces=2)
    first = nonce_of(auth.challenges(1000.0)[0])
    auth.challenges(1000.0)
    auth.challenges(1000.0)
    creds = parse_authorization(answer(auth, "MD5", "pw", first))
    assert creds is not None
    assert (
        auth.verify(creds, "REGISTER", ha1("MD5", "alice.desk", REALM, "pw"), 1001.0)
        is Verdict.STALE
    )


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwdw==",
        'Digest username="a", realm="r"',  # missing fields
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a" realm="r"',  # no comma
        "Digest " + "x" * 5000,
    ],
)
def test_malformed_authorization(header: str) -> None:
    assert parse_authorization(header) is None


def test_only_offered_algorithms_are_accepted() -> None:
    auth = DigestAuth(REALM, algorithms=["SHA-256"])
    challenges = auth.challenges(1000.0)
    assert len(challenges) == 1 and "algorithm=SHA-256" in challenges[0]
    nonce = nonce_of(challenges[0])
    md5 = parse_authorization(answer(auth, "MD5", "pw", nonce))
    assert md5 is not None
    assert (
        auth.verify(md5, "REGISTER", ha1("MD5", "alice.desk", REALM, "pw"), 1001.0) is Verdict.BAD
    )
    with pytest.raises(ValueError, match="SHA-1"):
        DigestAuth(REALM, algorithms=["SHA-1"])
