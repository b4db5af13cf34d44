"""SAML 2.0 single sign-on end to end: `callgate serve` with CALLGATE_IDENTITY__SAML__*, its SP
metadata fetched from /api/saml/metadata and loaded into pysaml2's IdP (tests/identity/
saml_idp.py), whose signed Responses the test posts to the ACS as a browser would; then forged,
expired, wrong-audience, wrong-recipient, unsigned, replayed and cross-browser ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import Table

from callgate.accounts import AccountService
from callgate.identity.errors import SsoFailed
from callgate.identity.saml_signin import SamlSignIn
from callgate.identity.settings import SamlSettings
from callgate.storage.db import open_store, sqlite_url
from callgate.storage.models import AuditEntry, User
from tests.e2e.helpers import Serve, callgate, free_port, http_json, private_relay_range, rows_of
from tests.identity.saml_idp import ENTITY_ID, SamlIdp

AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
USERS: Table = User.__table__  # type: ignore[assignment]
SCIM_TOKEN = "saml-scim-" + "5" * 40
CAROL = {
    "uid": ["carol"], "displayName": ["Carol Jones"], "mail": ["carol@example.com"],
    "groups": ["voice-admins", "Sales", "printers"],
}  # fmt: skip


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> SamlIdp:
    return SamlIdp(tmp_path_factory.mktemp("saml-idp"))


@pytest.fixture(scope="module")
def serve(idp: SamlIdp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("saml-serve")
    data_dir = root / "data"
    data_dir.mkdir()
    added = callgate(
        "user", "add", "bob", "--data-dir", str(data_dir), "--password-stdin",
        stdin="local-sesame-42\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    port = free_port()
    env = {
        "ENABLED": "true",
        "IDP_METADATA_FILE": str(idp.metadata),
        "SP_ENTITY_ID": f"http://127.0.0.1:{port}/api/saml/metadata",
        "ACS_URL": f"http://127.0.0.1:{port}/api/saml/acs",
        "LABEL": "Example SAML",
        "HANDLE_ATTRIBUTE": "uid",
        "GROUP_MAP": json.dumps({"sales": ["sales"]}),
        "ROLE_MAP": json.dumps({"voice-admins": "admin"}),
    }
    server = Serve(
        data_dir=data_dir,
        http_port=port,
        turn_port=free_port(),
        relay_ports=private_relay_range(),
        log_path=root / "serve.log",
        env={
            **{f"CALLGATE_IDENTITY__SAML__{k}": v for k, v in env.items()},
            "CALLGATE_IDENTITY__SCIM__ENABLED": "true",
            "CALLGATE_IDENTITY__SCIM__TOKEN": SCIM_TOKEN,
        },
    ).start()
    try:
        metadata = httpx.get(f"{server.url}/api/saml/metadata", timeout=30)
        assert metadata.status_code == 200
        idp.trust_sp(metadata.content)
        yield server
    finally:
        code = server.stop()
    log = server.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "sso_token=" not in log and SCIM_TOKEN not in log


def audit(serve: Serve, action: str) -> list[dict[str, Any]]:
    rows = rows_of(serve.database, AUDIT, AUDIT.c.action == action, order=("seq",))
    return [{**row, "details": json.loads(row["details"] or "{}")} for row in rows]


def start(browser: httpx.Client, serve: Serve, next_path: str = "/console") -> str:
    response = browser.get(f"{serve.url}/api/saml/login", params={"next": next_path})
    assert response.status_code == 302, response.text
    return response.headers["location"]


def post(
    browser: httpx.Client, serve: Serve, saml_response: str, relay_state: str
) -> dict[str, str]:
    """The IdP's auto-submitting form, posted: where callgate sends the browser, split."""
    form = {"SAMLResponse": saml_response, "RelayState": relay_state}
    response = browser.post(f"{serve.url}/api/saml/acs", data=form)
    assert response.status_code == 303, response.text
    path, _, fragment = response.headers["location"].partition("#")
    key, _, value = fragment.partition("=")
    return {"path": path, key: unquote(value)}


def relay_state(redirect: str) -> str:
    return httpx.URL(redirect).params["RelayState"]


def sign_in(serve: Serve, idp: SamlIdp, name_id: str = "p-carol", **changes: Any) -> dict[str, str]:
    with httpx.Client(timeout=30) as browser:
        redirect = start(browser, serve)
        answer = idp.answer(redirect, changes.pop("identity", CAROL), name_id, **changes)
        return post(browser, serve, answer, relay_state(redirect))


def test_metadata_and_the_button(serve: Serve) -> None:
    metadata = httpx.get(f"{serve.url}/api/saml/metadata", timeout=30)
    assert metadata.headers["content-type"].startswith("application/samlmetadata+xml")
    text = metadata.text
    assert f'entityID="{serve.url}/api/saml/metadata"' in text
    assert f'Location="{serve.url}/api/saml/acs"' in text and "HTTP-POST" in text
    assert http_json(f"{serve.url}/api/sso") == (
        200, {"enabled": True, "label": "Example SAML", "login": "/api/saml/login"},
    )  # fmt: skip


def test_sign_in_creates_the_account_with_mapped_groups_and_role(
    serve: Serve, idp: SamlIdp
) -> None:
    with httpx.Client(timeout=30) as browser:
        redirect = start(browser, serve)
        assert redirect.startswith(f"{ENTITY_ID}/sso?SAMLRequest=")
        assert browser.cookies.get("callgate_saml_state") == relay_state(redirect)
        result = post(browser, serve, idp.answer(redirect, CAROL, "p-carol"), relay_state(redirect))
    assert result["path"] == "/console"
    status, me = http_json(f"{serve.url}/api/me", token=result["sso_token"])
    assert status == 200
    assert me == {
        "handle": "carol", "display_name": "Carol Jones", "groups": ["sales"],
        "is_admin": True, "role": "admin", "source": "saml",
    }  # fmt: skip
    created = [e for e in audit(serve, "user.create") if e["object"] == "user:carol"]
    assert created[0]["actor"] == "identity:saml"
    assert created[0]["details"]["mapping"]["unmapped"] == ["printers"]
    login = audit(serve, "auth.login")[-1]["details"]
    assert (login["method"], login["subject"], login["issuer"]) == ("saml", "p-carol", ENTITY_ID)
    # The same NameID later: the same account, refreshed from the attributes.
    again = sign_in(serve, idp, identity={**CAROL, "groups": []})
    assert http_json(f"{serve.url}/api/me", token=again["sso_token"])[1]["role"] == "user"
    assert len([e for e in audit(serve, "user.create") if e["object"] == "user:carol"]) == 1


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"signer": "forged"}, "assertion rejected: bad signature"),
        ({"signer": "expired"}, "assertion rejected: expired or not yet valid (NotBefore/NotOnOrAfter)"),
        ({"sp_entity_id": "https://other.example/sp"}, "assertion rejected: wrong audience"),
        ({"destination": "https://evil.example/acs"}, "assertion rejected: not for us (Destination or InResponseTo)"),
        ({"sign_assertion": False}, "assertion rejected: not signed"),
        ({"in_response_to": "id-someone-elses"}, "assertion rejected: not an answer to our request (InResponseTo)"),
    ],
)  # fmt: skip
def test_bad_assertions_are_refused_and_audited(
    serve: Serve, idp: SamlIdp, changes: dict[str, Any], reason: str
) -> None:
    users = len(rows_of(serve.database, USERS))
    result = sign_in(serve, idp, name_id="p-mallory", identity={"uid": ["mallory"]}, **changes)
    assert result.get("sso_error") == reason, result
    failed = audit(serve, "auth.login_failed")[-1]["details"]
    assert (failed["method"], failed["reason"]) == ("saml", reason)
    assert len(rows_of(serve.database, USERS)) == users  # nothing created


def test_replayed_and_cross_browser_responses_are_refused(serve: Serve, idp: SamlIdp) -> None:
    with httpx.Client(timeout=30) as browser:
        redirect = start(browser, serve)
        answer = idp.answer(redirect, CAROL, "p-carol")
        assert "sso_token" in post(browser, serve, answer, relay_state(redirect))
        browser.cookies.set("callgate_saml_state", relay_state(redirect))
        replayed = post(browser, serve, answer, relay_state(redirect))
        assert replayed["sso_error"] == "unknown, expired or already used sign-in (RelayState)"
        browser.cookies.clear()
        fresh = start(browser, serve)  # the old Response under a new sign-in
        again = post(browser, serve, answer, relay_state(fresh))
        assert (
            again["sso_error"] == "assertion rejected: not an answer to our request (InResponseTo)"
        )
    with httpx.Client(timeout=30) as browser, httpx.Client(timeout=30) as victim:
        redirect = start(browser, serve)
        answer = idp.answer(redirect, CAROL, "p-carol")
        stolen = post(victim, serve, answer, relay_state(redirect))
    assert stolen["sso_error"] == "sign-in started in another browser (state cookie)"


def test_an_account_provisioned_over_scim_signs_in_as_it_is(serve: Serve, idp: SamlIdp) -> None:
    user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "sam@example.com",
            "displayName": "Sam (SCIM)"}  # fmt: skip
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
    created = httpx.post(f"{serve.url}/scim/v2/Users", json=user, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    identity = {"uid": ["sam"], "displayName": ["Sam From SAML"], "groups": ["voice-admins"]}
    result = sign_in(serve, idp, name_id="p-sam", identity=identity)
    me = http_json(f"{serve.url}/api/me", token=result["sso_token"])[1]
    assert (me["handle"], me["source"], me["role"], me["display_name"]) == (
        "sam", "scim", "user", "Sam (SCIM)",
    )  # fmt: skip
    patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
             "Operations": [{"op": "replace", "path": "active", "value": False}]}  # fmt: skip
    url = f"{serve.url}/scim/v2/Users/{created.json()['id']}"
    assert httpx.patch(url, json=patch, headers=headers).status_code == 200
    assert http_json(f"{serve.url}/api/me", token=result["sso_token"])[0] == 401
    again = sign_in(serve, idp, name_id="p-sam", identity=identity)
    assert again["sso_error"] == "account disabled in callgate"


def test_a_local_accounts_handle_is_not_taken(serve: Serve, idp: SamlIdp) -> None:
    result = sign_in(serve, idp, name_id="p-bob", identity={"uid": ["bob"]})
    assert result["sso_error"] == "handle 'bob' belongs to another account"
    assert (
        sign_in(serve, idp, name_id="p-x", identity={"uid": ["Not A Handle"]})["sso_error"]
        == "uid is not a usable handle"
    )


def test_the_replay_cache_refuses_an_assertion_seen_before(tmp_path: Path) -> None:
    """Behind InResponseTo and the single-use RelayState (above), the replay cache: the same
    assertion under a request that is outstanding again is still refused (in process)."""
    idp = SamlIdp(tmp_path)
    settings = SamlSettings(
        enabled=True, idp_metadata_file=idp.metadata, sp_entity_id="http://127.0.0.1:1/sp",
        acs_url="http://127.0.0.1:1/api/saml/acs", handle_attribute="uid",
    )  # fmt: skip
    store = open_store(sqlite_url(tmp_path))
    try:
        sign_in = SamlSignIn(settings, AccountService(store, "callgate"), store)
        idp.trust_sp(sign_in.metadata())
        redirect, state = sign_in.start("/", None)
        pending = sign_in._pending[state]
        answer = idp.answer(redirect, CAROL, "p-carol")
        assert sign_in.finish(answer, state, state, None)[0].handle == "carol"
        sign_in._pending[state] = pending  # as if the request were outstanding again
        with pytest.raises(SsoFailed) as caught:
            sign_in.finish(answer, state, state, None)
        assert caught.value.reason == "assertion rejected: replayed (seen before)"
    finally:
        store.close()
