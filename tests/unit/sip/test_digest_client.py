"""Digest answers towards a carrier (RFC 7616 §3.4, RFC 8760): checked by our own server-side
digest, which a carrier's would mirror; the password is never in a repr."""

from __future__ import annotations

from callgate.sip.digest import DigestAuth, Verdict, ha1, parse_authorization
from callgate.sip.digest_client import CarrierAuth, authorization, choose, parse_challenge

ACCOUNT = CarrierAuth("trunk-7", "not-in-logs")
URI = "sip:02079460000@192.0.2.7:5060"


def test_answers_verify_for_each_algorithm() -> None:
    for algorithm in ("SHA-256", "MD5"):
        server = DigestAuth("carrier.example", (algorithm,))
        challenge = choose(server.challenges(1000.0))
        assert challenge is not None and challenge.algorithm == algorithm
        creds = parse_authorization(authorization(challenge, ACCOUNT, "INVITE", URI))
        assert creds is not None and creds.uri == URI and creds.qop == "auth"
        stored = ha1(algorithm, "trunk-7", "carrier.example", "not-in-logs")
        assert server.verify(creds, "INVITE", stored, 1000.0) is Verdict.OK
        wrong = ha1(algorithm, "trunk-7", "carrier.example", "guess")
        assert server.verify(creds, "INVITE", wrong, 1000.0) is not Verdict.OK


def test_picks_the_first_challenge_it_can_answer() -> None:
    chosen = choose([
        'Digest realm="c", nonce="n1", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="c", nonce="n2", algorithm=MD5, qop="auth-int"',
        'Digest realm="c", nonce="n3", algorithm=SHA-256, qop="auth,auth-int", opaque="o"',
    ])  # fmt: skip
    assert chosen is not None and (chosen.nonce, chosen.opaque) == ("n3", "o")
    assert choose(['Basic realm="c"', "Digest nonce=x"]) is None


def test_without_qop_the_rfc_2069_form_and_the_opaque_is_returned() -> None:
    challenge = parse_challenge('Digest realm="c", nonce="abc", opaque="zz", stale=TRUE')
    assert challenge is not None and challenge.stale and challenge.algorithm == "MD5"
    value = authorization(challenge, ACCOUNT, "INVITE", URI)
    assert "qop" not in value and 'opaque="zz"' in value and "nc=" not in value


def test_the_password_stays_out_of_reprs_and_headers() -> None:
    assert "not-in-logs" not in repr(ACCOUNT)
    challenge = parse_challenge('Digest realm="c", nonce="abc", qop="auth"')
    assert challenge is not None
    assert "not-in-logs" not in authorization(challenge, ACCOUNT, "INVITE", URI)
