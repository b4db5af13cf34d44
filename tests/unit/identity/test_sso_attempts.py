"""Single sign-on attempts kept in memory: where the browser may be sent back, single use, and
the bounds that stop one address from crowding out the others (no network: a stub provider
hands out its metadata)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from callgate.identity import oidc_signin
from callgate.identity.errors import SsoFailed
from callgate.identity.oidc_provider import ProviderMetadata
from callgate.identity.oidc_signin import OidcSignIn, safe_next
from callgate.identity.settings import OidcSettings

SETTINGS = OidcSettings(
    enabled=True, issuer="https://id.example.com", client_id="cg",
    redirect_url="https://cg.example.com/api/sso/callback",
)  # fmt: skip


class StubProvider:
    settings = SETTINGS

    async def metadata(self) -> ProviderMetadata:
        return ProviderMetadata(
            issuer=SETTINGS.issuer,
            authorization_endpoint="https://id.example.com/authorize?tenant=1",
            token_endpoint="https://id.example.com/token",
            jwks_uri="https://id.example.com/jwks",
            device_authorization_endpoint=None,
        )


class StubStore:
    sessions: Any = None  # never used: `_failed` (which audits) is replaced below


class StubAccounts:
    realm = "callgate"


@pytest.fixture
def sign_in(monkeypatch: pytest.MonkeyPatch) -> OidcSignIn:
    found = OidcSignIn(StubProvider(), StubAccounts(), StubStore())  # type: ignore[arg-type]
    failures: list[str] = []
    monkeypatch.setattr(
        found,
        "_failed",
        lambda client, reason, status, extra=None: (
            failures.append(reason) or SsoFailed(reason, status)
        ),
    )
    return found


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/console/records", "/console/records"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/ok?x=1", "/ok?x=1"),
        ("/" + "a" * 600, "/"),
    ],
)
def test_safe_next(given: str | None, kept: str) -> None:
    assert safe_next(given) == kept


async def test_request_carries_pkce_state_and_nonce(sign_in: OidcSignIn) -> None:
    url, state = await sign_in.start("/console", "192.0.2.1")
    assert url.startswith("https://id.example.com/authorize?tenant=1&")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["state"] == state
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == SETTINGS.redirect_url
    assert query["scope"] == "openid profile email"
    assert sign_in.next_path(state) == "/console"


async def test_an_attempt_is_used_once(sign_in: OidcSignIn) -> None:
    _url, state = await sign_in.start("/", "192.0.2.1")
    with pytest.raises(SsoFailed, match="state cookie"):
        await sign_in.finish("code", state, "another-state", "192.0.2.1")
    with pytest.raises(SsoFailed, match="already used"):
        await sign_in.finish("code", state, state, "192.0.2.1")


async def test_one_address_keeps_only_its_latest_attempts(sign_in: OidcSignIn) -> None:
    _url, other = await sign_in.start("/", "198.51.100.7")
    states = [(await sign_in.start("/", "192.0.2.1"))[1] for _ in range(50)]
    assert sign_in.next_path(other) == "/"  # still there
    kept = [s for s in states if s in sign_in._pending]
    assert kept == states[-oidc_signin.MAX_PENDING_PER_CLIENT :]
    assert other in sign_in._pending


async def test_the_total_is_bounded(sign_in: OidcSignIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oidc_signin, "MAX_PENDING", 30)
    for n in range(100):
        await sign_in.start("/", f"192.0.2.{n}")
    assert len(sign_in._pending) == 30
