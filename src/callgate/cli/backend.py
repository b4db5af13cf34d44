"""Where `callgate group …` and `callgate policy …` act: the store of --data-dir directly (works
with the server stopped; changes are audited with actor "system"), or a running server's REST
API with --server as an admin (audited with the admin's handle). Both take and give the API's
JSON shapes, so every command is written once."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from callgate.cli.common import (
    AdminApi,
    admin_api,
    admin_password,
    api_server,
    fail,
    open_settings_store,
    settings_from,
)
from callgate.policy.errors import PolicyError

LOCAL_ACTOR = "system"
T = TypeVar("T")


def _q(text: str) -> str:
    return quote(text, safe="")


class ApiBackend:
    def __init__(self, api: AdminApi) -> None:
        self._api = api

    def policy(self) -> dict[str, Any]:
        return dict(self._api.call("GET", "/api/policy"))

    def rule(self, rule_id: int) -> dict[str, Any]:
        return dict(self._api.call("GET", f"/api/policy/rules/{rule_id}"))

    def add_rule(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._api.call("POST", "/api/policy/rules", body))

    def put_rule(self, rule_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._api.call("PUT", f"/api/policy/rules/{rule_id}", body))

    def delete_rule(self, rule_id: int) -> None:
        self._api.call("DELETE", f"/api/policy/rules/{rule_id}")

    def move_rule(self, rule_id: int, position: int) -> dict[str, Any]:
        body = {"position": position}
        return dict(self._api.call("POST", f"/api/policy/rules/{rule_id}/move", body))

    def settings(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._api.call("PUT", "/api/policy/settings", body))

    def explain(self, caller: str, callee: str, at: datetime | None) -> dict[str, Any]:
        body = {"caller": caller, "callee": callee, "at": at.isoformat() if at else None}
        return dict(self._api.call("POST", "/api/policy/explain", body))

    def groups(self) -> list[dict[str, Any]]:
        return list(self._api.call("GET", "/api/groups")["groups"])

    def group(self, name: str) -> dict[str, Any]:
        return dict(self._api.call("GET", f"/api/groups/{_q(name)}"))

    def create_group(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._api.call("POST", "/api/groups", body))

    def update_group(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._api.call("PATCH", f"/api/groups/{_q(name)}", body))

    def delete_group(self, name: str) -> None:
        self._api.call("DELETE", f"/api/groups/{_q(name)}")

    def member(self, name: str, handle: str, add: bool) -> dict[str, Any]:
        path = f"/api/groups/{_q(name)}/members/{_q(handle)}"
        return dict(self._api.call("PUT" if add else "DELETE", path))


class LocalBackend:
    """The same operations on the store; a refused change exits 1 with its message."""

    def __init__(self, data_dir: Path | None, config: Path | None) -> None:
        from callgate.policy.groups import GroupStore
        from callgate.policy.store import PolicyStore

        settings = settings_from(config, {"data_dir": data_dir})
        self._store = open_settings_store(settings)
        self._policy = PolicyStore(self._store)
        self._groups = GroupStore(self._store)

    def close(self) -> None:
        self._store.close()

    @staticmethod
    def _run(action: Callable[[], T]) -> T:
        try:
            return action()
        except PolicyError as exc:
            raise fail(str(exc), code=1) from None

    def policy(self) -> dict[str, Any]:
        settings = self._policy.settings()
        return {
            **settings.as_json(),
            "version": settings.version,
            "rules": [view.as_json() for view in self._policy.rules()],
        }

    def rule(self, rule_id: int) -> dict[str, Any]:
        return self._run(lambda: self._policy.rule(rule_id).as_json())

    def add_rule(self, body: dict[str, Any]) -> dict[str, Any]:
        from callgate.policy.specs import RuleSpec

        position = body.pop("position", None)
        spec = self._run(lambda: RuleSpec.parse(body))
        return self._run(lambda: self._policy.create_rule(LOCAL_ACTOR, spec, position).as_json())

    def put_rule(self, rule_id: int, body: dict[str, Any]) -> dict[str, Any]:
        from callgate.policy.specs import RuleSpec

        spec = self._run(lambda: RuleSpec.parse(body))
        return self._run(lambda: self._policy.update_rule(LOCAL_ACTOR, rule_id, spec).as_json())

    def delete_rule(self, rule_id: int) -> None:
        self._run(lambda: self._policy.delete_rule(LOCAL_ACTOR, rule_id))

    def move_rule(self, rule_id: int, position: int) -> dict[str, Any]:
        return self._run(lambda: self._policy.move_rule(LOCAL_ACTOR, rule_id, position).as_json())

    def settings(self, body: dict[str, Any]) -> dict[str, Any]:
        action, zone = body.get("default_action"), body.get("time_zone")
        return self._run(lambda: self._policy.set_settings(LOCAL_ACTOR, action, zone).as_json())

    def explain(self, caller: str, callee: str, at: datetime | None) -> dict[str, Any]:
        from callgate.policy.explain import explain

        return self._run(lambda: explain(self._policy, caller, callee, at, time.time()))

    def groups(self) -> list[dict[str, Any]]:
        return [view.as_json() for view in self._groups.list_groups()]

    def group(self, name: str) -> dict[str, Any]:
        return self._run(lambda: self._groups.get(name).as_json())

    def create_group(self, body: dict[str, Any]) -> dict[str, Any]:
        from callgate.policy.specs import GroupSpec

        spec = self._run(lambda: GroupSpec.parse(body))
        return self._run(lambda: self._groups.create(LOCAL_ACTOR, spec).as_json())

    def update_group(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._run(lambda: self._groups.update(LOCAL_ACTOR, name, body).as_json())

    def delete_group(self, name: str) -> None:
        self._run(lambda: self._groups.delete(LOCAL_ACTOR, name))

    def member(self, name: str, handle: str, add: bool) -> dict[str, Any]:
        change = self._groups.add_member if add else self._groups.remove_member
        return self._run(lambda: change(LOCAL_ACTOR, name, handle).as_json())


Backend = ApiBackend | LocalBackend


@contextlib.contextmanager
def backend(
    server: str | None,
    user: str | None,
    password_stdin: bool,
    data_dir: Path | None,
    config: Path | None,
) -> Iterator[Backend]:
    """The API of --server (or CALLGATE_SERVER), else the store of --data-dir / --config."""
    url = api_server(server, data_dir=data_dir, config=config)
    if url is None:
        if password_stdin:
            raise fail("--password-stdin is the admin's password: only with --server")
        local = LocalBackend(data_dir, config)
        try:
            yield local
        finally:
            local.close()
        return
    with admin_api(url, user, admin_password(user, password_stdin)) as api:
        yield ApiBackend(api)
