"""Pieces every `callgate` sub-command shares: error exit, settings loading, store opening, the
password rule (stdin or CALLGATE_PASSWORD; a prompt only on a terminal), and administration
through a running server's REST API (`--server`, an admin's token: `admin_api`)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from callgate.cli import output as _output
from callgate.errors import ConfigError, StorageError

if TYPE_CHECKING:
    import httpx

    from callgate.client.session import Session
    from callgate.config import Settings
    from callgate.storage.db import Store

PASSWORD_ENV = "CALLGATE_PASSWORD"  # noqa: S105 - the variable's name, not a password
ADMIN_PASSWORD_ENV = "CALLGATE_ADMIN_PASSWORD"  # noqa: S105 - the variable's name
SERVER_ENV = "CALLGATE_SERVER"
USER_ENV = "CALLGATE_USER"
API_TIMEOUT = 15.0
err = _output.err

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (env CALLGATE_CONFIG).", show_default=False),
]
StoreDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", metavar="DIR", help="Data directory (default ./data).")
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        metavar="URL",
        help="Through this running server's API, as an admin (env CALLGATE_SERVER), not --data-dir.",
        show_default=False,
    ),
]
ReaderOpt = Annotated[
    str | None,
    typer.Option(
        "--as",
        metavar="HANDLE",
        help="With --server: sign in as this admin or compliance officer (env CALLGATE_USER) "
        "instead of using the `callgate login` session; password from CALLGATE_ADMIN_PASSWORD.",
        show_default=False,
    ),
]
AdminOpt = Annotated[
    str | None,
    typer.Option(
        "--user",
        metavar="ADMIN",
        help="With --server: sign in as this admin (env CALLGATE_USER) instead of using the "
        "`callgate login` session; password from CALLGATE_ADMIN_PASSWORD.",
        show_default=False,
    ),
]


table_console = _output.table_console
fail = _output.fail


def handle_arg(text: str) -> str:
    """A handle argument in its one spelling (`accounts.handles.normal_handle`), imported here
    when a handle is given: importing `callgate.accounts` loads the store's models."""
    from callgate.accounts.handles import normal_handle

    return normal_handle(text)


def settings_from(config: Path | None, overrides: dict[str, Any]) -> Settings:
    from callgate.config import load_settings  # imported late: pydantic and SQLAlchemy

    try:
        return load_settings(config, overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def store_settings(command: str, config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings of a command that works on the store itself only: with CALLGATE_SERVER set and
    no sign of a local store (--data-dir, --config, CALLGATE_CONFIG, CALLGATE_DATA_DIR,
    CALLGATE_DATABASE_URL) it refuses, instead of quietly reading ./data."""
    local = [config, overrides.get("data_dir")] + [
        os.environ.get(name)
        for name in ("CALLGATE_CONFIG", "CALLGATE_DATA_DIR", "CALLGATE_DATABASE_URL")
    ]
    if os.environ.get(SERVER_ENV) and not any(local):
        raise fail(
            f"`callgate {command}` works on a store, not through {SERVER_ENV}: give --data-dir "
            f"or --config of the server's store, or unset {SERVER_ENV}"
        )
    return settings_from(config, overrides)


def open_settings_store(settings: Settings) -> Store:
    """The store of `settings` (its database URL or data dir), migrated; exit 1 when it fails."""
    from callgate.storage.db import open_store
    from callgate.storage.permissions import private_data_dir

    try:
        if settings.database_url is None:
            private_data_dir(settings.data_dir)
        return open_store(settings.database())
    except StorageError as exc:
        raise fail(str(exc), code=1) from None


def read_password(from_stdin: bool) -> str:
    """--password-stdin, else CALLGATE_PASSWORD, else (only on a terminal) a prompt."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        raise fail(f"give the password with --password-stdin or {PASSWORD_ENV}")
    if not password:
        raise fail("the password is empty")
    return password


# ---- administration through the REST API (--server) ----


def api_server(server: str | None, **local_options: object) -> str | None:
    """The server URL when the command goes through the API, else None (the store, directly).

    `--server`, else CALLGATE_SERVER unless a store option (--data-dir, --realm, --config) was
    given; `--server` together with a store option is an error.
    """
    given = [f"--{name.replace('_', '-')}" for name, value in local_options.items() if value]
    if server is None and not given:
        server = os.environ.get(SERVER_ENV) or None
    if server is None:
        return None
    if given:
        raise fail(f"{', '.join(given)}: only for the store itself, not with --server")
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise fail(f"--server: not an http(s) URL: {server!r}")
    return server.rstrip("/")


def admin_password(
    user: str | None, from_stdin: bool = False, *, password_options_free: bool = True
) -> str | None:
    """The admin's sign-in password for --server, or None (then the saved session is used).

    CALLGATE_ADMIN_PASSWORD; else — only where --password-stdin and CALLGATE_PASSWORD do not
    carry an account's new password (`password_options_free`) — the first line of stdin with
    --password-stdin, else CALLGATE_PASSWORD.
    """
    if from_stdin and password_options_free and not (user or os.environ.get(USER_ENV)):
        raise fail(f"--password-stdin needs --user (or {USER_ENV})")
    if os.environ.get(ADMIN_PASSWORD_ENV):
        return os.environ[ADMIN_PASSWORD_ENV]
    if not password_options_free:
        return None
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise fail("the password is empty")
        return password
    return os.environ.get(PASSWORD_ENV) or None


class AdminApi:
    """Calls to /api/users with an admin's bearer token; every refusal becomes a clear exit 1."""

    def __init__(self, http: httpx.Client, server: str, handle: str, token: str, own: bool) -> None:
        self._http = http
        self.server = server
        self.handle = handle
        self._token = token
        self._own = own  # signed in for this command: the token is revoked at the end

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer (None for 204); exit 1 with the server's reason when refused."""
        import httpx

        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            response = self._http.request(method, self.server + path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach {self.server}: {exc}", code=1) from None
        if response.is_success:
            return response.json() if response.content else None
        raise fail(self._refusal(response), code=1)

    def download(self, path: str, out: IO[bytes]) -> int:
        """GET `path` and write its body to `out` as it arrives (a streamed export); the number
        of bytes written. Exit 1 with the server's reason when refused."""
        import httpx

        headers = {"Authorization": f"Bearer {self._token}"}
        written = 0
        try:
            with self._http.stream("GET", self.server + path, headers=headers) as response:
                if not response.is_success:
                    response.read()
                    raise fail(self._refusal(response), code=1)
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach {self.server}: {exc}", code=1) from None
        return written

    def _refusal(self, response: httpx.Response) -> str:
        status, detail = response.status_code, _detail(response)
        if status == 401 and not self._own:
            return (
                f"the server refused the saved session of {self.handle!r} ({detail}): "
                "run `callgate login` again"
            )
        if status == 403:
            return f"{self.handle!r} is not an administrator"
        if status in (401, 404, 409, 422):
            return detail
        return f"HTTP {status} from {self.server}: {detail}"

    def sign_out(self) -> None:
        import httpx

        if self._own:  # best effort: the token expires on its own anyway
            headers = {"Authorization": f"Bearer {self._token}"}
            with contextlib.suppress(httpx.HTTPError):
                self._http.post(f"{self.server}/api/logout", headers=headers)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:200] or response.reason_phrase
    if isinstance(detail, list):  # request validation: [{"loc": [...], "msg": ...}, ...]
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return str(detail)


@contextlib.contextmanager
def admin_api(server: str, user: str | None, password: str | None) -> Iterator[AdminApi]:
    """An admin's access to `server`: sign in as `user` (or CALLGATE_USER) with `password`, else
    the session `callgate login` saved for this server (a prompt for `user`'s password on a
    terminal when there is none)."""
    import httpx

    handle = user or os.environ.get(USER_ENV) or None
    with httpx.Client(timeout=API_TIMEOUT) as http:
        if handle and password:
            api = AdminApi(http, server, handle, _sign_in(http, server, handle, password), True)
        else:
            saved = _saved_session(server, handle)
            if saved is not None:
                api = AdminApi(http, server, saved.handle, saved.token, False)
            elif handle and sys.stdin.isatty():
                password = typer.prompt(f"{handle}'s password", hide_input=True)
                api = AdminApi(http, server, handle, _sign_in(http, server, handle, password), True)
            else:
                raise _not_signed_in(server, handle)
        try:
            yield api
        finally:
            api.sign_out()


def _sign_in(http: httpx.Client, server: str, handle: str, password: str) -> str:
    import httpx

    body = {"handle": handle, "password": password, "device": "callgate-user"}
    try:
        response = http.post(f"{server}/api/login", json=body)
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach {server}: {exc}", code=1) from None
    if response.status_code == 401:
        raise fail(f"sign-in as {handle!r} refused: invalid credentials", code=1)
    if response.status_code != 200:
        raise fail(f"sign-in failed: HTTP {response.status_code}: {_detail(response)}", code=1)
    token = response.json().get("token")
    if not isinstance(token, str) or not token:
        raise fail("the sign-in answer has no token", code=1)
    return token


def _saved_session(server: str, handle: str | None) -> Session | None:
    """The `callgate login` session, when it is for `server` (and `handle`, if given)."""
    from callgate.client.errors import ClientError
    from callgate.client.session import load_session

    try:
        saved = load_session()
    except ClientError as exc:
        raise fail(str(exc), code=1) from None
    if saved is None or saved.server_url.rstrip("/") != server:
        return None
    if handle and saved.handle != handle:
        return None
    return saved


def _not_signed_in(server: str, handle: str | None) -> typer.Exit:
    if handle:
        return fail(
            f"no saved session of {handle!r} for {server}: give {handle!r}'s password in "
            f"{ADMIN_PASSWORD_ENV}, or run `callgate login --server {server} --user {handle}`",
            code=1,
        )
    return fail(
        f"not signed in to {server}: run `callgate login --server {server} --user ADMIN`, "
        f"or give --user ADMIN with {ADMIN_PASSWORD_ENV}",
        code=1,
    )
