"""Where `callgate user …` acts, like backend.py for groups and policy: the store of --data-dir
directly (works with the server stopped; changes are audited as "cli:<OS user>"), or a running
server's REST API (/api/users) with --server as an admin (audited with the admin's handle).
Both give the same rows and refuse with the same messages, so every command is written once.

Each backend opens its store or signs in on first use: a command that reads a new password reads
it before it touches the store or the network, as it always did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from callgate.cli import common
from callgate.cli.common import AdminApi, fail
from callgate.errors import AccountError, UnknownUserError

if TYPE_CHECKING:
    from callgate.accounts.service import AccountService
    from callgate.storage.db import Store
    from callgate.storage.repositories import TurnUserRepository


class UserBackend(Protocol):
    def add(
        self, handle: str, display_name: str | None, groups: list[str], password: str, role: str
    ) -> dict[str, Any]:
        """The new account: at least `handle`, `role` and `realm`."""

    def rows(self) -> list[dict[str, Any]]:
        """Every account (and, in the store, static TURN-only users) as `user list` shows it."""

    def set_disabled(self, handle: str, disabled: bool) -> None: ...

    def set_role(self, handle: str, role: str) -> None: ...

    def set_password(self, handle: str, read_password: Callable[[], str]) -> None: ...

    def remove(self, handle: str) -> str:
        """What was removed, as the command reports it."""


def _timestamp(value: Any) -> str:
    text = value if isinstance(value, str) else value.isoformat()
    return str(text).replace("+00:00", "Z")


def account_row(u: dict[str, Any]) -> dict[str, Any]:
    """An account as `user list --json` prints it, from the API's JSON or the store's record."""
    return {
        "handle": u["handle"],
        "display_name": u["display_name"],
        "groups": list(u["groups"]),
        "admin": u["is_admin"],
        "role": u.get("role", "admin" if u["is_admin"] else "user"),
        "disabled": u["disabled"],
        "kind": "account",
        "realm": u["realm"],
        "created_at": _timestamp(u["created_at"]),
    }


def _path(handle: str, action: str = "") -> str:
    return f"/api/users/{quote(handle, safe='')}" + (f"/{action}" if action else "")


class ApiUsers:
    """/api/users as an admin; the server refuses with its reason (exit 1)."""

    def __init__(self, url: str, user: str | None, password: Callable[[], str | None]) -> None:
        self._url = url
        self._user = user
        self._password = password
        self._stack = contextlib.ExitStack()
        self._client: AdminApi | None = None

    def _api(self) -> AdminApi:
        if self._client is None:
            self._client = self._stack.enter_context(
                common.admin_api(self._url, self._user, self._password())
            )
        return self._client

    def close(self) -> None:
        self._stack.close()

    def add(
        self, handle: str, display_name: str | None, groups: list[str], password: str, role: str
    ) -> dict[str, Any]:
        body = {
            "handle": handle,
            "display_name": display_name,
            "groups": groups,
            "password": password,
            "role": role,
        }
        return dict(self._api().call("POST", "/api/users", body))

    def rows(self) -> list[dict[str, Any]]:
        return [account_row(u) for u in self._api().call("GET", "/api/users")["users"]]

    def set_disabled(self, handle: str, disabled: bool) -> None:
        self._api().call("POST", _path(handle, "disable" if disabled else "enable"))

    def set_role(self, handle: str, role: str) -> None:
        self._api().call("PATCH", _path(handle), {"role": role})

    def set_password(self, handle: str, read_password: Callable[[], str]) -> None:
        password = read_password()
        self._api().call("PUT", _path(handle, "password"), {"password": password})

    def remove(self, handle: str) -> str:
        self._api().call("DELETE", _path(handle))
        return f"removed user {handle}"


class StoreUsers:
    """The accounts table of the store; a refused change exits 1 with its message."""

    def __init__(self, data_dir: Path | None, config: Path | None, realm: str | None) -> None:
        self._options = (data_dir, config, realm)
        self._store: Store | None = None
        self._services: tuple[AccountService, TurnUserRepository] | None = None

    def _open(self) -> tuple[AccountService, TurnUserRepository]:
        if self._services is None:
            from callgate.accounts.service import AccountService
            from callgate.storage.repositories import TurnUserRepository

            data_dir, config, realm = self._options
            settings = common.settings_from(
                config, {"data_dir": data_dir, "turn": {"realm": realm}}
            )
            self._store = common.open_settings_store(settings)
            accounts = AccountService(self._store, settings.turn.realm)
            self._services = accounts, TurnUserRepository(self._store.sessions)
        return self._services

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    @staticmethod
    def _actor() -> str:
        from callgate.accounts.audit import cli_actor

        return cli_actor()

    def add(
        self, handle: str, display_name: str | None, groups: list[str], password: str, role: str
    ) -> dict[str, Any]:
        from callgate.accounts.passwords import check_new_password
        from callgate.accounts.service import check_handle

        accounts, _ = self._open()
        try:
            check_new_password(check_handle(handle), password)
            created = accounts.create_user(
                handle, display_name, groups, password, role=role, actor=self._actor()
            )
        except AccountError as exc:
            raise fail(str(exc), code=1) from None
        return {"handle": created.handle, "role": created.role, "realm": created.realm}

    def rows(self) -> list[dict[str, Any]]:
        accounts, turn_users = self._open()
        rows = [account_row(asdict(u)) for u in accounts.list_users()]
        rows += [
            {
                "handle": t.name,
                "display_name": "",
                "groups": [],
                "admin": False,
                "role": "",
                "disabled": False,
                "kind": "turn-only",
                "realm": t.realm,
                "created_at": _timestamp(t.created_at),
            }
            for t in turn_users.list_users()
        ]
        return rows

    def set_disabled(self, handle: str, disabled: bool) -> None:
        self._change(handle, lambda accounts, actor: accounts.set_disabled(handle, disabled, actor))

    def set_role(self, handle: str, role: str) -> None:
        self._change(handle, lambda accounts, actor: accounts.set_role(handle, role, actor))

    def _change(self, handle: str, change: Callable[[AccountService, str], object]) -> None:
        accounts, _ = self._open()
        try:
            change(accounts, self._actor())
        except UnknownUserError:
            raise fail(f"no user {handle!r}", code=1) from None

    def set_password(self, handle: str, read_password: Callable[[], str]) -> None:
        accounts, _ = self._open()
        if accounts.get(handle) is None:
            raise fail(f"no user {handle!r}", code=1)
        password = read_password()
        from callgate.accounts.passwords import check_new_password

        try:
            check_new_password(handle, password)
            accounts.set_password(handle, password, self._actor())
        except AccountError as exc:
            raise fail(str(exc), code=1) from None

    def remove(self, handle: str) -> str:
        accounts, turn_users = self._open()
        try:
            accounts.remove(handle, self._actor())
        except UnknownUserError:
            if turn_users.remove(handle, accounts.realm) == 0:
                raise fail(f"no user {handle!r}", code=1) from None
            return f"removed TURN-only user {handle} (realm {accounts.realm})"
        return f"removed user {handle}"


@contextlib.contextmanager
def user_backend(
    server: str | None,
    user: str | None,
    password_stdin: bool,
    *,
    data_dir: Path | None,
    config: Path | None,
    realm: str | None = None,
    new_password: bool = False,
) -> Iterator[UserBackend]:
    """The API of --server (or CALLGATE_SERVER), else the store of --data-dir / --config.

    `new_password`: the command reads an account's new password (`add`, `passwd`), so
    --password-stdin and CALLGATE_PASSWORD carry that one, never the admin's.
    """
    url = common.api_server(server, data_dir=data_dir, realm=realm, config=config)
    if url is None:
        if password_stdin and not new_password:
            raise fail("--password-stdin is the admin's password: only with --server")
        local = StoreUsers(data_dir, config, realm)
        try:
            yield local
        finally:
            local.close()
        return
    if new_password:
        remote = ApiUsers(
            url, user, lambda: common.admin_password(user, password_options_free=False)
        )
    else:
        remote = ApiUsers(url, user, lambda: common.admin_password(user, password_stdin))
    try:
        yield remote
    finally:
        remote.close()
