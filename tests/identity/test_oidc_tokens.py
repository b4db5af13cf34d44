"""ID token checks (OpenID Connect Core 1.0 §3.1.3.7) over real HTTP: a small provider on
loopback serves discovery and a JWKS whose keys the test controls, so it can rotate them and
sign forged, expired, wrong-audience and wrong-nonce tokens with joserfc."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from callgate.identity.errors import ProviderError, TokenRejected
from callgate.identity.oidc_provider import OidcProvider
from callgate.identity.settings import OidcSettings

CLIENT = "callgate-test"
NONCE = "n-0123456789"


class KeyServer:
    """Discovery and JWKS on loopback; `keys` may be replaced (rotation)."""

    def __init__(self) -> None:
        self.keys: list[RSAKey] = [RSAKey.generate_key(2048, {"kid": "k1"}, private=True)]
        self.jwks_hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {
                        "issuer": owner.issuer,
                        "authorization_endpoint": f"{owner.issuer}/authorize",
                        "token_endpoint": f"{owner.issuer}/token",
                        "jwks_uri": f"{owner.issuer}/jwks",
                    }
                elif self.path == "/jwks":
                    owner.jwks_hits += 1
                    body = {"keys": [k.as_dict(private=False) for k in owner.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def sign(self, key: RSAKey | OctKey | None = None, alg: str = "RS256", **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        payload = {
            "iss": self.issuer, "sub": "s-1", "aud": CLIENT, "iat": now, "exp": now + 300,
            "nonce": NONCE, **claims,
        }  # fmt: skip
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {"alg": alg, "kid": key.kid} if key.kid else {"alg": alg}
        return jwt.encode(header, payload, key, algorithms=[alg])


@pytest.fixture
def keys() -> Iterator[KeyServer]:
    server = KeyServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
async def provider(keys: KeyServer) -> Any:
    settings = OidcSettings(
        enabled=True, issuer=keys.issuer, client_id=CLIENT,
        redirect_url="http://127.0.0.1:8080/api/sso/callback", clock_skew_s=30,
    )  # fmt: skip
    found = OidcProvider(settings)
    yield found
    await found.aclose()


async def test_good_token(keys: KeyServer, provider: OidcProvider) -> None:
    claims = await provider.verify_id_token(keys.sign(groups=["a"]), NONCE)
    assert claims["sub"] == "s-1" and claims["groups"] == ["a"]


async def test_rotated_key_is_fetched(keys: KeyServer, provider: OidcProvider) -> None:
    await provider.verify_id_token(keys.sign(), NONCE)
    new = RSAKey.generate_key(2048, {"kid": "k2"}, private=True)
    keys.keys = [new]  # the provider rotated: k1 is gone
    claims = await provider.verify_id_token(keys.sign(new), NONCE)
    assert claims["sub"] == "s-1"
    assert keys.jwks_hits == 2


async def test_device_grant_tokens_need_no_nonce_but_every_other_check(
    keys: KeyServer, provider: OidcProvider
) -> None:
    """The device authorization grant has no nonce (RFC 8628): None skips only that check."""
    assert (await provider.verify_id_token(keys.sign(nonce=None), None))["sub"] == "s-1"
    for changes, reason in (
        ({"aud": "someone-else"}, "wrong aud"),
        ({"sub": None}, "missing claim sub"),
    ):
        with pytest.raises(TokenRejected) as caught:
            await provider.verify_id_token(keys.sign(nonce=None, **changes), None)
        assert str(caught.value) == reason
    with pytest.raises(TokenRejected):
        await provider.verify_id_token(keys.sign(nonce=None), NONCE)


def _from_now(seconds: int) -> int:
    return int(time.time()) + seconds


# Claims as functions, evaluated when the test runs: times taken at collection would drift
# (a token "issued 10 minutes in the future" is no longer so 10 minutes into a long run).
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (lambda: {"aud": "someone-else"}, "wrong aud"),
        (lambda: {"iss": "https://evil.example"}, "wrong iss"),
        (lambda: {"nonce": "replayed-nonce"}, "wrong nonce"),
        (lambda: {"nonce": None}, "missing claim nonce"),
        (lambda: {"exp": _from_now(-120)}, "expired (exp)"),
        (
            lambda: {"iat": _from_now(600), "exp": _from_now(900)},
            "issued in the future (iat)",
        ),
        (lambda: {"aud": [CLIENT, "other"], "azp": "other"}, "wrong azp"),
    ],
)
async def test_bad_claims(
    keys: KeyServer,
    provider: OidcProvider,
    changes: Callable[[], dict[str, Any]],
    reason: str,
) -> None:
    with pytest.raises(TokenRejected) as caught:
        await provider.verify_id_token(keys.sign(**changes()), NONCE)
    assert str(caught.value) == reason


async def test_expiry_within_skew_is_accepted(keys: KeyServer, provider: OidcProvider) -> None:
    claims = await provider.verify_id_token(keys.sign(exp=int(time.time()) - 10), NONCE)
    assert claims["sub"] == "s-1"


async def test_forged_signature(keys: KeyServer, provider: OidcProvider) -> None:
    forger = RSAKey.generate_key(2048, {"kid": "k1"}, private=True)  # same kid, other key
    with pytest.raises(TokenRejected, match="bad signature"):
        await provider.verify_id_token(keys.sign(forger), NONCE)


async def test_unknown_key_after_refresh_is_refused(
    keys: KeyServer, provider: OidcProvider
) -> None:
    stranger = RSAKey.generate_key(2048, {"kid": "nobody"}, private=True)
    with pytest.raises(TokenRejected, match="key the provider does not publish"):
        await provider.verify_id_token(keys.sign(stranger), NONCE)
    # A second unknown kid within a minute does not fetch the JWKS again.
    hits = keys.jwks_hits
    with pytest.raises(TokenRejected, match="key the provider does not publish"):
        await provider.verify_id_token(keys.sign(stranger), NONCE)
    assert keys.jwks_hits == hits


async def test_symmetric_and_none_algorithms_refused(
    keys: KeyServer, provider: OidcProvider
) -> None:
    secret = OctKey.generate_key(256)
    with pytest.raises(TokenRejected):
        await provider.verify_id_token(keys.sign(secret, alg="HS256"), NONCE)
    header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    with pytest.raises(TokenRejected):
        await provider.verify_id_token(f"{header}.e30.", NONCE)


async def test_garbage_and_empty(provider: OidcProvider) -> None:
    for token in ["", "a.b.c", "x" * 20_000]:
        with pytest.raises(TokenRejected):
            await provider.verify_id_token(token, NONCE)


async def test_issuer_mismatch_in_discovery(keys: KeyServer) -> None:
    settings = OidcSettings(
        enabled=True, issuer=keys.issuer + "/", client_id=CLIENT,
        redirect_url="http://127.0.0.1:8080/api/sso/callback",
    )  # fmt: skip
    provider = OidcProvider(settings)
    try:
        with pytest.raises(ProviderError, match="discovery names issuer"):
            await provider.metadata()
    finally:
        await provider.aclose()


async def test_provider_down() -> None:
    settings = OidcSettings(
        enabled=True, issuer="http://127.0.0.1:1", client_id=CLIENT,
        redirect_url="http://127.0.0.1:8080/api/sso/callback",
    )  # fmt: skip
    provider = OidcProvider(settings)
    try:
        with pytest.raises(ProviderError, match="ConnectError"):
            await provider.metadata()
    finally:
        await provider.aclose()
