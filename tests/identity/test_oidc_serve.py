"""Single sign-on end to end: `callgate serve` with CALLGATE_IDENTITY__OIDC__* against
oidc-provider-mock (an OpenID provider built on authlib that nobody here wrote) on loopback; the
browser's redirects are followed by httpx, the provider's consent form submitted as a person
would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from oidc_provider_mock import run_server_in_thread
from sqlalchemy import Table

from callgate.storage.models import AuditEntry
from tests.e2e.helpers import Serve, http_json, rows_of
from tests.identity.oidc_support import CLIENT_ID, PEOPLE, consent, finish, sso_serve, start

AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with run_server_in_thread(require_nonce=True, user_claims=PEOPLE) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def serve(provider: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with sso_serve(tmp_path_factory.mktemp("oidc-serve"), provider) as server:
        yield server


def audit(server: Serve, action: str) -> list[dict[str, Any]]:
    rows = rows_of(server.database, AUDIT, AUDIT.c.action == action, order=("seq",))
    return [{**row, "details": json.loads(row["details"])} for row in rows]


def test_sso_is_offered_with_its_label(serve: Serve) -> None:
    info = {"enabled": True, "label": "Example Corp", "login": "/api/sso/login"}
    assert http_json(f"{serve.url}/api/sso") == (200, info)


def test_authorization_request_has_pkce_state_and_nonce(serve: Serve) -> None:
    with httpx.Client(timeout=30) as client:
        query = parse_qs(urlsplit(start(client, serve)).query)
        assert query["code_challenge_method"] == ["S256"]
        assert len(query["code_challenge"][0]) == 43
        assert len(query["state"][0]) >= 43 and len(query["nonce"][0]) >= 43
        assert query["client_id"] == [CLIENT_ID]
        assert client.cookies.get("callgate_sso_state") == query["state"][0]


def test_sign_in_creates_the_account_and_returns_a_token(serve: Serve) -> None:
    with httpx.Client(timeout=30) as client:
        result = finish(client, consent(client, start(client, serve), "sub-carol"))
    assert result["path"] == "/console"
    token = result["sso_token"]
    status, me = http_json(f"{serve.url}/api/me", token=token)
    assert status == 200
    assert me == {
        "handle": "carol", "display_name": "Carol Jones", "groups": ["sales"],
        "is_admin": True, "role": "admin", "source": "oidc",
    }  # fmt: skip
    created = [e for e in audit(serve, "user.create") if e["object"] == "user:carol"]
    assert created[0]["actor"] == "identity:oidc"
    assert created[0]["details"]["mapping"]["unmapped"] == ["printers"]
    login = audit(serve, "auth.login")[-1]
    assert (login["actor"], login["details"]["method"]) == ("carol", "oidc")
    assert login["details"]["subject"] == "sub-carol"


def test_second_sign_in_finds_the_same_account(serve: Serve) -> None:
    with httpx.Client(timeout=30) as client:
        result = finish(client, consent(client, start(client, serve), "sub-carol"))
    assert http_json(f"{serve.url}/api/me", token=result["sso_token"])[1]["handle"] == "carol"
    assert len([e for e in audit(serve, "user.create") if e["object"] == "user:carol"]) == 1


def test_replayed_callback_is_refused(serve: Serve) -> None:
    with httpx.Client(timeout=30) as client:
        callback = consent(client, start(client, serve), "sub-carol")
        assert "sso_token" in finish(client, callback)
        client.cookies.set("callgate_sso_state", parse_qs(urlsplit(callback).query)["state"][0])
        again = finish(client, callback)
    assert again["sso_error"] == "unknown, expired or already used sign-in (state)"
    assert audit(serve, "auth.login_failed")[-1]["details"]["method"] == "oidc"


def test_callback_from_another_browser_is_refused(serve: Serve) -> None:
    with httpx.Client(timeout=30) as client:
        callback = consent(client, start(client, serve), "sub-carol")
    with httpx.Client(timeout=30) as other:  # no state cookie: a login CSRF attempt
        result = finish(other, callback)
    assert result["sso_error"] == "sign-in started in another browser (state cookie)"


def test_forged_code_is_refused(serve: Serve) -> None:
    with httpx.Client(timeout=30) as client:
        callback = consent(client, start(client, serve), "sub-carol")
        forged = callback.replace("code=", "code=forged")
        result = finish(client, forged)
    assert result["sso_error"].startswith("provider error: token endpoint refused the code")


def test_provider_error_is_reported(serve: Serve) -> None:
    with httpx.Client(timeout=30) as client:
        authorize = start(client, serve)
        response = client.post(authorize, data={"action": "deny"})
        assert response.status_code == 302
        result = finish(client, response.headers["location"])
    assert result["sso_error"] == "the provider answered 'access_denied'"


@pytest.mark.parametrize(
    ("sub", "reason"),
    [
        ("sub-dan", "claim preferred_username is not a usable handle"),
        ("sub-bob", "handle 'bob' belongs to another account"),
    ],
)
def test_refusals_create_nothing(serve: Serve, sub: str, reason: str) -> None:
    with httpx.Client(timeout=30) as client:
        result = finish(client, consent(client, start(client, serve), sub))
    assert result["sso_error"] == reason
    assert audit(serve, "auth.login_failed")[-1]["details"]["reason"] == reason
    status, body = http_json(
        f"{serve.url}/api/login", body={"handle": "bob", "password": "local-sesame-42"}
    )
    assert status == 200 and body["user"]["source"] == "local"


def test_next_must_be_one_of_our_pages(serve: Serve) -> None:
    with httpx.Client(timeout=30) as client:
        result = finish(
            client, consent(client, start(client, serve, "//evil.example/x"), "sub-carol")
        )
    assert result["path"] == "/"


def test_cli_sign_in_needs_a_provider_with_the_device_grant(serve: Serve) -> None:
    """oidc-provider-mock has no device authorization endpoint: `callgate login --sso` is told
    so plainly (tests/identity/test_sso_device.py has a provider that has one)."""
    status, body = http_json(f"{serve.url}/api/sso/device", body={})
    assert status == 501
    assert body["detail"] == "the provider offers no device authorization endpoint"
