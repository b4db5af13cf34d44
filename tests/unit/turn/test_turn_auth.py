"""TURN authentication: long-term keys (RFC 8489 §9.2), TURN REST credentials compatible with
coturn's use-auth-secret, and stateless nonces bound to the client IP and the clock."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from callgate.clock import ManualClock
from callgate.stun.constants import Attr, MessageClass, Method
from callgate.stun.message import build, decode, encode, verify_integrity
from callgate.turn.auth import (
    Authenticator,
    long_term_key,
    long_term_key_sha256,
    opaque_string,
    parse_rest_username,
    rest_credentials,
    rest_password,
    rest_username,
)

REALM = "example.org"
SECRET = "logen"
CLIENT_IP = "198.51.100.1"

# RFC 5769 §2.4: request signed with the long-term key of user U+30DE U+30C8 U+30EA U+30C3
# U+30AF U+30B9, realm "example.org", password "TheMatrIX" (after SASLprep).
RFC5769_LONG_TERM = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e"
    "00060012e3839ee38388e383aae38383e382afe382b90000"
    "0015001c662f2f3439396b39353464364f4c33346f4c39465354767936347341"
    "0014000b6578616d706c652e6f726700"
    "00080014f67024656dd64a3e02b8e0712e85c9a28ca89666"
)
RFC5769_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"


# -- long-term keys --------------------------------------------------------------------------


def test_long_term_key_matches_rfc5769_vector() -> None:
    key = long_term_key(RFC5769_USERNAME, REALM, "TheMatrIX")
    # MD5("<username>:example.org:TheMatrIX")
    assert key.hex() == "e8ca7ad59d5eb0518e312911d2dab2a9"
    assert verify_integrity(decode(RFC5769_LONG_TERM), key)
    assert not verify_integrity(decode(RFC5769_LONG_TERM), long_term_key("x", REALM, "TheMatrIX"))


def test_long_term_key_sha256() -> None:
    key = long_term_key_sha256("alice", REALM, "pw")
    assert key == hashlib.sha256(b"alice:example.org:pw").digest()
    assert len(key) == 32
    # OpaqueString: a non-ASCII space is a space, and the password is NFC-normalized.
    assert long_term_key_sha256("alice", REALM, "p\u00a0w") == long_term_key_sha256(
        "alice", REALM, "p w"
    )
    assert long_term_key_sha256("alice", REALM, "e\u0301") == long_term_key_sha256(
        "alice", REALM, "\u00e9"
    )


def test_opaque_string_keeps_case_and_symbols() -> None:
    assert opaque_string("Pa$$ W\u2003rd") == "Pa$$ W rd"


# -- static users ----------------------------------------------------------------------------


def test_static_user_credential() -> None:
    auth = Authenticator(REALM, ManualClock(), static_users={"alice": "pw"})
    credential = auth.credential("alice")
    assert credential is not None
    assert (credential.username, credential.user) == ("alice", "alice")
    assert credential.key == long_term_key("alice", REALM, "pw")
    assert auth.credential("bob") is None


def test_key_lookup_credential() -> None:
    keys = {"carol": long_term_key("carol", REALM, "pw")}
    auth = Authenticator(REALM, ManualClock(), key_lookup=keys.get)
    credential = auth.credential("carol")
    assert credential is not None and credential.key == keys["carol"]
    assert auth.credential("dave") is None


# -- TURN REST credentials (coturn use-auth-secret) -----------------------------------------


def test_rest_password_is_coturns() -> None:
    """Computed with `printf '1700003600:alice' | openssl dgst -sha1 -hmac logen -binary | base64`:
    coturn's turnutils -W and its server derive the same password."""
    assert rest_password(SECRET, "1700003600:alice") == "d+h+qxTp/LWqQk/C8XWBzn3l8uM="
    assert rest_password(SECRET, "1700003600") == "5Le++cm7Nbh3M5ZYT+TPGL/B2bM="


def test_rest_password_by_hand() -> None:
    username = "1700003600:alice"
    by_hand = base64.b64encode(hmac.new(b"logen", username.encode(), hashlib.sha1).digest())
    assert rest_password(SECRET, username) == by_hand.decode()


def test_rest_credentials_and_username_parsing() -> None:
    username, password = rest_credentials(SECRET, "alice", ttl=3600, now=1_700_000_000.5)
    assert username == "1700003600:alice" == rest_username("alice", 1_700_003_600)
    assert password == rest_password(SECRET, username)
    assert parse_rest_username(username) == (1_700_003_600, "alice")
    assert parse_rest_username("1700003600") == (1_700_003_600, "")
    assert parse_rest_username("1700003600:a:b") == (1_700_003_600, "a:b")
    for name in ("alice", "", "-5:alice", "1e9:alice", "9999999999999:alice", "abc:1700003600"):
        assert parse_rest_username(name) is None, name


def _rest_auth(clock: ManualClock) -> Authenticator:
    return Authenticator(REALM, clock, rest_secret=SECRET)


def test_rest_credential_valid() -> None:
    clock = ManualClock(start_wall=1_700_000_000)
    credential = _rest_auth(clock).credential("1700003600:alice")
    assert credential is not None
    assert (credential.username, credential.user) == ("1700003600:alice", "alice")
    password = rest_password(SECRET, "1700003600:alice")
    assert credential.key == long_term_key("1700003600:alice", REALM, password)


def test_rest_credential_expired() -> None:
    clock = ManualClock(start_wall=1_700_000_000)
    auth = _rest_auth(clock)
    clock.advance(3600)
    assert auth.credential("1700003600:alice") is not None  # valid through its expiry second
    clock.advance(1)
    assert auth.credential("1700003600:alice") is None


def test_rest_username_without_user_part() -> None:
    clock = ManualClock(start_wall=1_700_000_000)
    credential = _rest_auth(clock).credential("1700003600")
    assert credential is not None
    assert (credential.username, credential.user) == ("1700003600", "1700003600")


def test_rest_password_under_wrong_secret_fails_integrity() -> None:
    clock = ManualClock(start_wall=1_700_000_000)
    username = "1700003600:alice"
    credential = _rest_auth(clock).credential(username)
    assert credential is not None

    def signed_with(secret: str) -> bytes:
        key = long_term_key(username, REALM, rest_password(secret, username))
        message = build(
            Method.ALLOCATE, MessageClass.REQUEST, bytes(12), [(Attr.USERNAME, username.encode())]
        )
        return encode(message, key)

    assert verify_integrity(decode(signed_with(SECRET)), credential.key)
    assert not verify_integrity(decode(signed_with("wrong")), credential.key)


def test_rest_disabled_without_secret() -> None:
    assert Authenticator(REALM, ManualClock()).credential("1700003600:alice") is None


def test_static_user_wins_over_rest_name() -> None:
    clock = ManualClock(start_wall=1_700_000_000)
    auth = Authenticator(REALM, clock, static_users={"1700003600:alice": "pw"}, rest_secret=SECRET)
    credential = auth.credential("1700003600:alice")
    assert credential is not None
    assert credential.key == long_term_key("1700003600:alice", REALM, "pw")


# -- nonces ---------------------------------------------------------------------------------


def test_nonce_valid_for_its_client_until_it_expires() -> None:
    clock = ManualClock()
    auth = Authenticator(REALM, clock, nonce_lifetime=600)
    nonce = auth.new_nonce(CLIENT_IP)
    assert auth.nonce_valid(nonce, CLIENT_IP)
    clock.advance(600)
    assert auth.nonce_valid(nonce, CLIENT_IP)
    clock.advance(1)
    assert not auth.nonce_valid(nonce, CLIENT_IP)
    assert auth.nonce_valid(auth.new_nonce(CLIENT_IP), CLIENT_IP)


def test_nonce_of_another_client_ip_is_invalid() -> None:
    auth = Authenticator(REALM, ManualClock())
    nonce = auth.new_nonce(CLIENT_IP)
    assert not auth.nonce_valid(nonce, "198.51.100.2")


@pytest.mark.parametrize(
    "forge",
    [
        lambda n: n[:-1] + ("0" if n[-1] != "0" else "1"),  # MAC changed
        lambda n: f"{int(n[:-24], 16) + 3600:x}" + n[-24:],  # expiry pushed out, old MAC
        lambda n: "zzzzzzzz" + n[-24:],  # expiry not hex
        lambda n: n[-24:],  # too short
        lambda n: n + "0" * 20,  # too long
        lambda n: "",
    ],
    ids=["mac", "extended-expiry", "not-hex", "short", "long", "empty"],
)
def test_forged_nonce_is_invalid(forge: object) -> None:
    auth = Authenticator(REALM, ManualClock())
    nonce = auth.new_nonce(CLIENT_IP)
    assert callable(forge)
    assert not auth.nonce_valid(forge(nonce), CLIENT_IP)


def test_nonce_from_another_server_key_is_invalid() -> None:
    clock = ManualClock()
    ours = Authenticator(REALM, clock, nonce_key=b"a" * 32)
    theirs = Authenticator(REALM, clock, nonce_key=b"b" * 32)
    assert not ours.nonce_valid(theirs.new_nonce(CLIENT_IP), CLIENT_IP)
    # Same key (e.g. after a restart with a configured key): still valid, nothing was stored.
    again = Authenticator(REALM, clock, nonce_key=b"a" * 32)
    assert again.nonce_valid(ours.new_nonce(CLIENT_IP), CLIENT_IP)
