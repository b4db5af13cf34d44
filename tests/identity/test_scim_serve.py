"""SCIM 2.0 provisioning end to end: `callgate serve` with CALLGATE_IDENTITY__SCIM__* (and single
sign-on with oidc-provider-mock), checked by scim2-tester, an independent SCIM compliance
checker, over loopback; then the leaver: an account provisioned over SCIM signs in with single
sign-on, is in a call, and is deactivated by the provider: the call ends, the socket closes, the
token is dead, and all of it is audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from oidc_provider_mock import run_server_in_thread
from scim2_client import BaseSyncSCIMClient
from scim2_tester import Status, check_server
from sqlalchemy import Table

from callgate.client.signaling import SignalingClient, SignalingError
from callgate.storage.models import AuditEntry
from tests.e2e.helpers import Serve, connected, final_cdr, http_json, next_of, rows_of, wait_for
from tests.identity.oidc_support import PEOPLE, consent, finish, sso_serve, start

AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
TOKEN = "scim-e2e-" + "7" * 40
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
SCIM_ENV = {
    "CALLGATE_IDENTITY__SCIM__ENABLED": "true",
    "CALLGATE_IDENTITY__SCIM__TOKEN": TOKEN,
    "CALLGATE_IDENTITY__SCIM__GROUP_MAP": json.dumps({"Sales": ["sales"]}),
}


class HttpxScimClient(BaseSyncSCIMClient):
    """scim2-client's request engine over httpx (its documented extension point)."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__()
        self.client = client

    def _stays_under_base_url(self, endpoint: str) -> bool:
        url = self.client.build_request("GET", endpoint).url
        base = self.client.base_url
        return url.host == base.host and url.raw_path.startswith(base.raw_path)

    def _parse_json(self, response: Any) -> Any:
        return response.json()

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.client.request(method, url, **kwargs)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with run_server_in_thread(require_nonce=True, user_claims=PEOPLE) as provider:
        issuer = f"http://localhost:{provider.server_port}"
        with sso_serve(tmp_path_factory.mktemp("scim-serve"), issuer, **SCIM_ENV) as server:
            yield server


def scim(serve: Serve, token: str = TOKEN) -> httpx.Client:
    headers = {"Content-Type": "application/scim+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    # a connection per request: a kept-alive one can be closed by the server's idle timeout just
    # as the next request goes out on it (a loaded machine stalls the client between requests),
    # and httpx does not retry; a SCIM client's reuse of connections is not what these test
    return httpx.Client(
        base_url=f"{serve.url}/scim/v2",
        headers=headers,
        timeout=10,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def audit(serve: Serve, action: str) -> list[dict[str, Any]]:
    rows = rows_of(serve.database, AUDIT, AUDIT.c.action == action, order=("seq",))
    return [{**row, "details": json.loads(row["details"] or "{}")} for row in rows]


def test_scim2_tester_finds_the_endpoint_compliant(serve: Serve) -> None:
    with scim(serve) as http:
        client = HttpxScimClient(http)
        client.discover()
        results = check_server(client)
    failed = [
        (r.status.name, r.title, r.reason)
        for r in results
        if r.status not in (Status.SUCCESS, Status.SKIPPED)
    ]
    assert failed == []
    # Discovery, CRUD on Users and Groups, PATCH and filters all ran.
    assert sum(r.status == Status.SUCCESS for r in results) > 100


def test_a_wrong_or_missing_token_is_refused_and_audited(serve: Serve) -> None:
    for token in ("", "x" * len(TOKEN), TOKEN[:-1]):
        with scim(serve, token) as http:
            for path in ("/Users", "/ServiceProviderConfig", "/Schemas", "/nothing"):
                response = http.get(path)
                assert response.status_code == 401, (token, path)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["status"] == "401"
    with scim(serve, "bad") as http:
        response = http.post("/Users", json={"schemas": [USER], "userName": "mallory"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    failures = audit(serve, "scim.auth_failed")
    assert failures and failures[0]["details"]["client"] == "127.0.0.1"
    with scim(serve) as http:
        found = http.get("/Users", params={"filter": 'userName eq "mallory"'}).json()
    assert found["totalResults"] == 0


def test_errors_are_scim_documents(serve: Serve) -> None:
    with scim(serve) as http:
        unknown = http.post("/Users", json={"schemas": [USER], "userName": "x1", "shoe": 1})
        assert unknown.status_code == 400
        assert unknown.headers["content-type"].startswith("application/scim+json")
        assert "shoe" in unknown.json()["detail"]
        assert http.post("/Users", content=b"{not json").json()["scimType"] == "invalidSyntax"
        assert http.put("/ServiceProviderConfig", json={}).status_code == 405
        assert http.get("/Users/no-such-id").status_code == 404
        assert http.get("/Users", params={"filter": "userName eq"}).status_code == 400


def test_search_by_post(serve: Serve) -> None:
    """RFC 7644 §3.4.3: the query in a SearchRequest body, answered 200 with a ListResponse."""
    search = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'userName eq "searched@example.com"', "attributes": ["userName"],
    }  # fmt: skip
    with scim(serve) as http:
        created = http.post("/Users", json={"schemas": [USER], "userName": "searched@example.com"})
        assert created.status_code == 201
        found = http.post("/Users/.search", json=search)
        assert found.status_code == 200, found.text
        assert [r["userName"] for r in found.json()["Resources"]] == ["searched@example.com"]
        groups = http.post("/Groups/.search", json={**search, "filter": 'displayName eq "none"'})
        assert (groups.status_code, groups.json()["totalResults"]) == (200, 0)
        bad = http.post("/Users/.search", json={**search, "filter": "userName eq"})
        assert bad.status_code == 400
        assert http.post("/.search", json=search).status_code == 501


async def test_deactivating_a_signed_in_user_ends_the_call_and_the_session(serve: Serve) -> None:
    # The provider provisions carol (Entra-style: capitalised op, booleans as strings) ...
    with scim(serve) as http:
        created = http.post(
            "/Users",
            json={"schemas": [USER], "userName": "Carol@example.com", "active": "True",
                  "displayName": "Carol (SCIM)"},
        )  # fmt: skip
    assert created.status_code == 201, created.text
    assert created.headers["location"].endswith(f"/scim/v2/Users/{created.json()['id']}")
    # ... she signs in with single sign-on into that account (SCIM keeps its profile and role) ...
    with httpx.Client(timeout=30) as browser:
        token = finish(browser, consent(browser, start(browser, serve), "sub-carol"))["sso_token"]
    status, me = http_json(f"{serve.url}/api/me", token=token)
    assert status == 200, me
    assert (me["handle"], me["source"], me["role"]) == ("carol", "scim", "user")
    assert me["display_name"] == "Carol (SCIM)"
    # ... and is in a call with bob when the provider deactivates her.
    bob_token = (await SignalingClient.login(serve.url, "bob", "local-sesame-42")).token
    async with (
        connected(serve, "carol", token=token) as carol,
        connected(serve, "bob", token=bob_token) as bob,
    ):
        call_id = (await carol.request("call.invite", to="bob", sdp=SDP))["call_id"]
        await next_of(bob, "call.incoming", call_id)
        await bob.request("call.answer", call_id=call_id, sdp=SDP)
        await next_of(carol, "call.answered", call_id)
        with scim(serve) as http:
            operation = {"op": "Replace", "path": "active", "value": "False"}
            body = {"schemas": [PATCH], "Operations": [operation]}
            patched = http.patch(f"/Users/{created.json()['id']}", json=body)
        assert patched.status_code == 200 and patched.json()["active"] is False
        ended = await next_of(bob, "call.ended", call_id)  # at once: no 15 s token check
        assert ended["reason"] == "ended-by-admin"
        await wait_for(lambda: carol.closed, 30, "carol's socket closed")
        with pytest.raises(SignalingError) as closed:
            await carol.request("call.invite", to="bob", sdp=SDP)
        assert closed.value.code == "unauthorized"  # 4401: her account was taken away
    cdr = await final_cdr(serve.database, call_id)
    assert cdr["disposition"] == "answered"
    assert http_json(f"{serve.url}/api/me", token=token)[0] == 401
    with pytest.raises(SignalingError):
        await SignalingClient.connect(serve.url, token, "again", timeout=30)
    with httpx.Client(timeout=30) as browser:
        again = finish(browser, consent(browser, start(browser, serve), "sub-carol"))
    assert again["sso_error"] == "account disabled in callgate"
    disabled = [e for e in audit(serve, "user.disable") if e["object"] == "user:carol"]
    assert disabled[-1]["actor"] == "identity:scim"
    ended_by = [e for e in audit(serve, "call.end_by_admin") if e["object"] == f"call:{call_id}"]
    assert ended_by[-1]["actor"] == "identity:scim"
    assert audit(serve, "scim.user.patch")[-1]["actor"] == "identity:scim"
