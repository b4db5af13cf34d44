"""Account administration over REST (/api/users) on a temp store, through httpx's ASGI transport."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from callgate.api.deps import Services

ACCOUNT_FIELDS = {
    "handle", "display_name", "groups", "is_admin", "role", "legal_hold", "disabled",
    "has_password", "realm", "created_at", "updated_at", "source", "email",
}  # fmt: skip
# Every endpoint, with a body that would be valid, for the 401/403 checks.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/users", None),
    ("POST", "/api/users", {"handle": "zed", "password": "pass-for-z1"}),
    ("POST", "/api/users/bob/disable", None),
    ("POST", "/api/users/bob/enable", None),
    ("PUT", "/api/users/bob/password", {"password": "new-password-1"}),
    ("DELETE", "/api/users/bob", None),
]


async def sign_in(client: httpx.AsyncClient, handle: str, password: str) -> httpx.Response:
    return await client.post("/api/login", json={"handle": handle, "password": password})


async def login(client: httpx.AsyncClient, handle: str, password: str) -> dict[str, str]:
    """The Authorization header of a fresh token of `handle`."""
    response = await sign_in(client, handle, password)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture
async def root(client: httpx.AsyncClient) -> dict[str, str]:
    return await login(client, "root", "pw-root")


def no_secrets(response: httpx.Response) -> None:
    text = response.text.lower()
    assert "hash" not in text and "turn_key" not in text and "argon2" not in text


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_needs_a_token(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    assert (await client.request(method, path, json=body)).status_code == 401
    forged = {"Authorization": "Bearer forged"}
    response = await client.request(method, path, json=body, headers=forged)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_refuses_non_admins(
    client: httpx.AsyncClient,
    services: Services,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    alice = await login(client, "alice", "pw-alice")
    response = await client.request(method, path, json=body, headers=alice)
    assert response.status_code == 403
    assert response.json() == {"detail": "administrators only"}
    bob = services.accounts.get("bob")  # nothing changed
    assert bob is not None and not bob.disabled
    assert services.accounts.get("zed") is None
    assert (await sign_in(client, "bob", "pw-bob")).status_code == 200


async def test_list_users_without_secrets(client: httpx.AsyncClient, root: dict[str, str]) -> None:
    response = await client.get("/api/users", headers=root)
    assert response.status_code == 200
    users = response.json()["users"]
    assert [u["handle"] for u in users] == ["alice", "bob", "root"]
    assert all(set(u) == ACCOUNT_FIELDS for u in users)
    alice = users[0]
    assert (alice["display_name"], alice["groups"], alice["is_admin"], alice["disabled"]) == (
        "Alice A", ["eng"], False, False,
    )  # fmt: skip
    assert (alice["has_password"], alice["realm"]) == (True, "callgate")
    assert alice["created_at"].startswith("2026-11-27T09:00:00")
    assert users[2]["is_admin"] is True
    no_secrets(response)


async def test_add_user_who_can_then_sign_in(
    client: httpx.AsyncClient, services: Services, root: dict[str, str]
) -> None:
    body = {
        "handle": "carol", "display_name": "Carol C", "groups": ["ops", "eng"],
        "password": "pass-for-c1", "is_admin": False,
    }  # fmt: skip
    response = await client.post("/api/users", json=body, headers=root)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == ACCOUNT_FIELDS
    assert (created["handle"], created["display_name"], created["groups"]) == (
        "carol", "Carol C", ["eng", "ops"],
    )  # fmt: skip
    assert (created["is_admin"], created["disabled"], created["has_password"]) == (
        False, False, True,
    )  # fmt: skip
    no_secrets(response)
    assert (await sign_in(client, "carol", "pass-for-c1")).status_code == 200

    minimal = await client.post(
        "/api/users", json={"handle": "dan", "password": "pass-for-d1"}, headers=root
    )
    assert minimal.status_code == 201
    assert (minimal.json()["display_name"], minimal.json()["groups"]) == ("dan", [])


async def test_an_added_admin_can_administer(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    body = {"handle": "boss", "password": "pass-for-b1", "is_admin": True}
    assert (await client.post("/api/users", json=body, headers=root)).status_code == 201
    boss = await login(client, "boss", "pass-for-b1")
    assert (await client.get("/api/users", headers=boss)).status_code == 200


async def test_add_existing_handle_is_409(client: httpx.AsyncClient, root: dict[str, str]) -> None:
    response = await client.post(
        "/api/users", json={"handle": "bob", "password": "other-password"}, headers=root
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "user 'bob' exists"}
    assert (await sign_in(client, "bob", "pw-bob")).status_code == 200  # untouched


@pytest.mark.parametrize(
    "body",
    [
        {"handle": "Bad Handle", "password": "pw"},
        {"handle": "../etc", "password": "pw"},
        {"handle": "", "password": "pw"},
        {"handle": "x" * 65, "password": "pw"},
        {"handle": "eve", "password": ""},
        {"handle": "eve", "password": "p" * 1025},
        {"handle": "eve"},
        {"handle": "eve", "password": "pw", "groups": ["no spaces"]},
        {"handle": "eve", "password": "pw", "display_name": "bell\x07"},
        {"handle": "eve", "password": "pw", "password_hash": "$argon2id$..."},
        {"handle": "eve", "password": "pw", "is_admin": "maybe"},
    ],
)
async def test_add_bad_values_are_422(
    client: httpx.AsyncClient, services: Services, root: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.post("/api/users", json=body, headers=root)
    assert response.status_code == 422, response.text
    assert [u.handle for u in services.accounts.list_users()] == ["alice", "bob", "root"]


async def test_disable_revokes_access_and_enable_restores_sign_in(
    client: httpx.AsyncClient, services: Services, root: dict[str, str]
) -> None:
    bob = await login(client, "bob", "pw-bob")
    response = await client.post("/api/users/bob/disable", headers=root)
    assert response.status_code == 200
    assert (response.json()["handle"], response.json()["disabled"]) == ("bob", True)
    no_secrets(response)
    assert (await client.get("/api/me", headers=bob)).status_code == 401  # the old token
    assert (await sign_in(client, "bob", "pw-bob")).status_code == 401
    again = await client.post("/api/users/bob/disable", headers=root)  # idempotent
    assert again.status_code == 200 and again.json()["disabled"] is True

    enabled = await client.post("/api/users/bob/enable", headers=root)
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert (await sign_in(client, "bob", "pw-bob")).status_code == 200


async def test_a_disabled_admin_loses_admin_access(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    body = {"handle": "boss", "password": "pass-for-b1", "is_admin": True}
    assert (await client.post("/api/users", json=body, headers=root)).status_code == 201
    boss = await login(client, "boss", "pass-for-b1")
    assert (await client.post("/api/users/boss/disable", headers=root)).status_code == 200
    assert (await client.get("/api/users", headers=boss)).status_code == 401
    assert (await client.post("/api/users/root/disable", headers=boss)).status_code == 401


async def test_admin_cannot_disable_or_remove_themselves(
    client: httpx.AsyncClient, services: Services, root: dict[str, str]
) -> None:
    response = await client.post("/api/users/root/disable", headers=root)
    assert response.status_code == 409
    assert response.json() == {"detail": "you cannot disable yourself"}
    response = await client.delete("/api/users/root", headers=root)
    assert response.status_code == 409
    assert response.json() == {"detail": "you cannot remove yourself"}
    me = services.accounts.get("root")
    assert me is not None and not me.disabled
    assert (await client.get("/api/users", headers=root)).status_code == 200
    # Enabling yourself (a no-op) and changing your own password are fine.
    assert (await client.post("/api/users/root/enable", headers=root)).status_code == 200
    response = await client.put(
        "/api/users/root/password", json={"password": "second-pass-2"}, headers=root
    )
    assert response.status_code == 200
    assert (await sign_in(client, "root", "second-pass-2")).status_code == 200


async def test_set_password(
    client: httpx.AsyncClient, services: Services, root: dict[str, str]
) -> None:
    response = await client.put(
        "/api/users/alice/password", json={"password": "a-password-2"}, headers=root
    )
    assert response.status_code == 200
    assert response.json()["handle"] == "alice"
    no_secrets(response)
    assert (await sign_in(client, "alice", "pw-alice")).status_code == 401
    assert (await sign_in(client, "alice", "a-password-2")).status_code == 200


@pytest.mark.parametrize(
    "body", [{"password": ""}, {"password": "p" * 1025}, {}, {"password": "x", "extra": 1}]
)
async def test_bad_password_is_422(
    client: httpx.AsyncClient, root: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.put("/api/users/alice/password", json=body, headers=root)
    assert response.status_code == 422
    assert (await sign_in(client, "alice", "pw-alice")).status_code == 200


async def test_remove_user_and_their_tokens(
    client: httpx.AsyncClient, services: Services, root: dict[str, str]
) -> None:
    bob = await login(client, "bob", "pw-bob")
    response = await client.delete("/api/users/bob", headers=root)
    assert response.status_code == 204 and response.content == b""
    assert services.accounts.get("bob") is None
    assert (await client.get("/api/me", headers=bob)).status_code == 401
    assert (await sign_in(client, "bob", "pw-bob")).status_code == 401
    listed = await client.get("/api/users", headers=root)
    assert [u["handle"] for u in listed.json()["users"]] == ["alice", "root"]
    assert (await client.delete("/api/users/bob", headers=root)).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/users/nobody/disable", None),
        ("POST", "/api/users/nobody/enable", None),
        ("PUT", "/api/users/nobody/password", {"password": "pw"}),
        ("DELETE", "/api/users/nobody", None),
        ("DELETE", "/api/users/Not%20A%20Handle", None),
    ],
)
async def test_unknown_handle_is_404(
    client: httpx.AsyncClient,
    root: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    response = await client.request(method, path, json=body, headers=root)
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no user ")


async def test_order_of_refusals(client: httpx.AsyncClient, root: dict[str, str]) -> None:
    """No token → 401 and non-admin → 403 whatever the body; an admin's malformed body → 422
    before the handle is looked up."""
    assert (await client.put("/api/users/nobody/password", json={})).status_code == 401
    alice = await login(client, "alice", "pw-alice")
    response = await client.put("/api/users/nobody/password", json={}, headers=alice)
    assert response.status_code == 403
    response = await client.put("/api/users/nobody/password", json={}, headers=root)
    assert response.status_code == 422
