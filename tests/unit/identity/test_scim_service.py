"""SCIM provisioning (identity/scim_service.py) on both backends, without sockets: what an
identity provider's requests do to accounts, Microsoft Entra's quirks, and bad payloads refused
with a precise SCIM error and nothing half-done. The HTTP side and an independent compliance
checker are in tests/identity/test_scim_serve.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr
from scim2_models import SCIMException

from callgate.accounts import AccountService
from callgate.identity.scim_service import ScimService
from callgate.identity.settings import ScimSettings
from callgate.records.audit import AuditLog
from callgate.storage.db import Store

BASE = "https://callgate.example.com/scim/v2"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def scim(store: Store) -> ScimService:
    settings = ScimSettings(
        enabled=True,
        token=SecretStr("s" * 40),
        group_map={"Sales Team": ["sales"]},
        role_map={"Voice Admins": "admin"},
        max_results=2,
    )
    return ScimService(settings, store, "callgate")


def new_user(scim: ScimService, user_name: str = "Alice.Martin@example.com", **more: Any) -> str:
    body = {
        "schemas": [USER], "userName": user_name, "externalId": f"ext-{user_name}",
        "name": {"givenName": "Alice", "familyName": "Martin"},
        "emails": [{"value": "a@home.example", "type": "home"},
                   {"value": "alice@example.com", "type": "work", "primary": True}],
        **more,
    }  # fmt: skip
    document, gone = scim.create_user(body, BASE)
    assert gone == []
    return str(document["id"])


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(operations)}


def refused(call: Any, *args: Any) -> SCIMException:
    with pytest.raises(SCIMException) as caught:
        call(*args)
    return caught.value


def entries(store: Store, action: str) -> list[dict[str, Any]]:
    found = [e for e in AuditLog(store).iter_entries() if e.action == action]
    return [{"actor": e.actor, "object": e.object, **json.loads(e.details or "{}")} for e in found]


def test_created_user_is_an_account_signing_in_with_single_sign_on(
    scim: ScimService, store: Store
) -> None:
    scim_id = new_user(scim)
    account = AccountService(store, "callgate").get("alice.martin")
    assert account is not None
    assert (account.source, account.display_name, account.email) == (
        "scim", "Alice Martin", "alice@example.com",
    )  # fmt: skip
    assert not account.has_password and not account.disabled and account.role == "user"
    document = scim.get_user(scim_id, {}, BASE)
    assert document["userName"] == "Alice.Martin@example.com"
    assert document["meta"]["location"] == f"{BASE}/Users/{scim_id}"
    created = entries(store, "user.create")[-1]
    assert (created["actor"], created["object"]) == ("identity:scim", "user:alice.martin")
    assert created["scim_id"] == scim_id and created["source"] == "scim"


def test_bad_payloads_are_refused_precisely_and_create_nothing(
    scim: ScimService, store: Store
) -> None:
    accounts = AccountService(store, "callgate")
    unknown = refused(
        scim.create_user, {"schemas": [USER], "userName": "eve", "shoeSize": 44}, BASE
    )
    assert unknown.status == 400 and "shoeSize" in str(unknown.to_error().detail)
    password = refused(
        scim.create_user, {"schemas": [USER], "userName": "eve", "password": "x"}, BASE
    )
    assert password.status == 400 and "password" in str(password.to_error().detail)
    no_handle = refused(scim.create_user, {"schemas": [USER], "userName": "Eve Space"}, BASE)
    assert no_handle.status == 400 and "handle" in str(no_handle.to_error().detail)
    assert refused(scim.create_user, [1, 2], BASE).status == 400
    assert accounts.get("eve") is None and accounts.get("eve space") is None
    accounts.create_user("bob", password="local-password-1")
    taken = refused(scim.create_user, {"schemas": [USER], "userName": "bob@example.com"}, BASE)
    assert taken.status == 409 and "another account" in str(taken.to_error().detail)
    new_user(scim)
    twice = refused(
        scim.create_user, {"schemas": [USER], "userName": "ALICE.martin@EXAMPLE.com"}, BASE
    )
    assert twice.to_error().scim_type == "uniqueness"
    assert scim.list_users({}, BASE)["totalResults"] == 1


def test_entra_style_patch_deactivates_revokes_tokens_and_reports_the_handle(
    scim: ScimService, store: Store
) -> None:
    accounts = AccountService(store, "callgate")
    scim_id = new_user(scim)
    token, _ = accounts.issue_token(accounts.get("alice.martin"))  # type: ignore[arg-type]
    # Entra sends capitalised ops and booleans as strings.
    document, gone = scim.patch_user(
        scim_id, patch({"op": "Replace", "path": "active", "value": "False"}), BASE
    )
    assert document["active"] is False and gone == ["alice.martin"]
    assert accounts.verify_token(token) is None
    assert accounts.get("alice.martin").disabled  # type: ignore[union-attr]
    disabled = entries(store, "user.disable")[-1]
    assert disabled["actor"] == "identity:scim"
    assert disabled["reason"] == "deactivated over SCIM (active false)"
    _, again = scim.patch_user(scim_id, patch({"op": "Replace", "value": {"active": "True"}}), BASE)
    assert again == [] and not accounts.get("alice.martin").disabled  # type: ignore[union-attr]
    assert entries(store, "user.enable")[-1]["object"] == "user:alice.martin"


def test_patch_naming_nothing_changes_nothing(scim: ScimService) -> None:
    scim_id = new_user(scim)
    before = scim.get_user(scim_id, {}, BASE)
    bad = refused(
        scim.patch_user,
        scim_id,
        patch(
            {"op": "replace", "path": "displayName", "value": "Changed"},
            {"op": "replace", "path": "favouriteColour", "value": "blue"},
        ),
        BASE,
    )
    assert bad.status == 400 and "favouriteColour" in str(bad.to_error().detail)
    assert scim.get_user(scim_id, {}, BASE) == before
    assert refused(scim.patch_user, "no-such-id", patch(), BASE).status in (400, 404)


def test_groups_give_callgate_groups_and_role_and_take_them_back(
    scim: ScimService, store: Store
) -> None:
    accounts = AccountService(store, "callgate")
    alice = new_user(scim)
    admins, _ = scim.create_group(
        {"schemas": [GROUP], "displayName": "Voice Admins", "members": [{"value": alice}]}, BASE
    )
    sales, _ = scim.create_group({"schemas": [GROUP], "displayName": "Sales Team"}, BASE)
    scim.patch_group(
        sales["id"], patch({"op": "Add", "path": "members", "value": [{"value": alice}]}), BASE
    )
    account = accounts.get("alice.martin")
    assert account is not None and (account.role, account.groups) == ("admin", ("sales",))
    user = scim.get_user(alice, {}, BASE)
    assert sorted(g["display"] for g in user["groups"]) == ["Sales Team", "Voice Admins"]
    update = entries(store, "user.update")[-1]
    assert update["mapping"]["groups"] == ["sales"] and update["scim_groups"]
    remove = {"op": "Remove", "path": f'members[value eq "{alice}"]'}
    scim.patch_group(admins["id"], patch(remove), BASE)
    assert accounts.get("alice.martin").role == "user"  # type: ignore[union-attr]
    scim.delete_group(sales["id"])
    assert accounts.get("alice.martin").groups == ()  # type: ignore[union-attr]
    stranger = {"schemas": [GROUP], "displayName": "Ghosts", "members": [{"value": "nobody"}]}
    assert refused(scim.create_group, stranger, BASE).status == 400
    assert scim.list_groups({"filter": 'displayName eq "Ghosts"'}, BASE)["totalResults"] == 0


def test_filters_and_paging(scim: ScimService) -> None:
    for name in ("ann@example.com", "ben@example.com", "cat@other.example"):
        new_user(scim, name, emails=[{"value": name, "primary": True}])
    found = scim.list_users({"filter": 'userName eq "BEN@example.com"'}, BASE)
    assert [r["userName"] for r in found["Resources"]] == ["ben@example.com"]
    by_external = scim.list_users({"filter": 'externalId eq "ext-cat@other.example"'}, BASE)
    assert by_external["totalResults"] == 1
    domain = scim.list_users({"filter": 'emails.value ew "@example.com"'}, BASE)
    assert domain["totalResults"] == 2
    page = scim.list_users({"startIndex": "2", "count": "5"}, BASE)  # max_results is 2
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (3, 2, 2)
    slim = scim.list_users({"filter": 'userName sw "a"', "attributes": "userName"}, BASE)
    assert set(slim["Resources"][0]) == {"id", "schemas", "userName"}
    bad = refused(scim.list_users, {"filter": 'userName eq "x" and ('}, BASE)
    assert bad.status == 400 and bad.to_error().scim_type == "invalidFilter"
    unknown = refused(scim.list_users, {"filter": "shoeSize gt 40"}, BASE)
    assert unknown.status == 400


def test_deleting_a_user_deletes_the_account(scim: ScimService, store: Store) -> None:
    scim_id = new_user(scim)
    assert scim.delete_user(scim_id) == ["alice.martin"]
    assert AccountService(store, "callgate").get("alice.martin") is None
    assert refused(scim.get_user, scim_id, {}, BASE).status == 404
    assert refused(scim.delete_user, scim_id).status == 404
    deleted = entries(store, "user.delete")[-1]
    assert deleted["reason"] == "deleted over SCIM" and deleted["scim_id"] == scim_id
