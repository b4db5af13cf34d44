"""Helpers for the end-to-end tests: `callgate serve` as a subprocess, CLI clients, SDK clients,
and read-only views of the server's records (SQLite file or PostgreSQL database).

Everything runs on loopback with free ports and a private relay port range; nothing here touches
`src/` internals beyond the public client SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, select

from callgate.accounts.audit import cli_actor
from callgate.client.signaling import SignalingClient
from callgate.storage.db import open_store, sqlite_url
from callgate.storage.models import Call, CallQuality, RelaySession
from callgate.storage.permissions import private_data_dir
from tests.cheap_passwords import template_accounts
from tests.cli_process import COMMAND, clean_env, run_in_process
from tests.ports import free_port, relay_port_range

LOOPBACK = "127.0.0.1"
USERS = ("alice", "bob", "carol")

# Call timeouts of the test servers. Short enough that a watchdog test finishes in seconds, long
# enough that real calls on a loaded machine are not cut by them: a softphone gathers relay
# candidates before it answers (ring), two aiortc or Chromium peers finish ICE and DTLS through
# the relay (setup), and their stats reports, every 2 s, can arrive late (silence: the default).
# tests/e2e/test_signaling_e2e.py, whose calls carry no media, sets shorter ones for its server
# (SERVE_ENV_OVERRIDES, read by tests/e2e/conftest.py).
RING_TIMEOUT = 15.0
SETUP_TIMEOUT = 30.0
SILENCE_TIMEOUT = 8.0
SERVE_ENV = {
    "CALLGATE_CALLS__RING_TIMEOUT": str(RING_TIMEOUT),
    "CALLGATE_CALLS__SETUP_TIMEOUT": str(SETUP_TIMEOUT),
    "CALLGATE_CALLS__SILENCE_TIMEOUT": str(SILENCE_TIMEOUT),
    # A module's tests share accounts and place many calls: the per-account attempt limit has
    # its own test (tests/integration/test_signaling_security.py).
    "CALLGATE_CALLS__CALL_ATTEMPTS_PER_MINUTE": "1000",
}


def password_of(handle: str) -> str:
    """A password that passes the policy (8+ characters, not containing the handle)."""
    return "e2e-" + hashlib.sha256(handle.encode()).hexdigest()[:12]


def callgate(
    *args: str, stdin: str | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """`callgate ARGS` on a store or a server: run in-process (tests/cli_process.py; `serve`
    itself is a process of its own, `Serve`). `timeout` is kept for the callers' sake."""
    del timeout
    return run_in_process(*args, cwd=Path.cwd(), stdin=stdin, **env)


def private_relay_range(size: int = 400) -> tuple[int, int]:
    """A relay port block of this test worker's own (tests/ports.py)."""
    return relay_port_range(size)


def store_env(database_url: str | None) -> dict[str, str]:
    """The environment that points `callgate` at a PostgreSQL store (none: the data dir's SQLite)."""
    return {"CALLGATE_DATABASE_URL": database_url} if database_url else {}


def add_users(
    data_dir: Path, handles: Iterable[str] = USERS, database_url: str | None = None
) -> None:
    for handle in handles:
        result = callgate(
            "user", "add", handle, "--data-dir", str(data_dir), "--password-stdin",
            stdin=password_of(handle) + "\n", **store_env(database_url),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


def http_json(
    url: str, *, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, Any]:
    """GET (or POST `body`) and return (status, decoded JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # a loaded machine
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


@dataclass
class Serve:
    """A running `callgate serve` subprocess."""

    data_dir: Path
    http_port: int
    turn_port: int
    relay_ports: tuple[int, int]
    log_path: Path
    metrics_port: int | None = None  # the --metrics listener (off when None)
    database_url: str | None = None  # PostgreSQL; None: SQLite in data_dir
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # wall clock, when it answered /healthz

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics: on a listener of their own, not on the HTTP app."""
        assert self.metrics_port is not None, "this server has no --metrics listener"
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def database(self) -> str:
        """The store's SQLAlchemy URL."""
        return self.database_url or sqlite_url(self.data_dir)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`callgate ARGS` on this server's store (its data dir and database)."""
        return callgate(
            *args, "--data-dir", str(self.data_dir), stdin=stdin, **store_env(self.database_url)
        )

    def add_users(self, handles: Iterable[str]) -> None:
        add_users(self.data_dir, handles, self.database_url)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 90.0) -> Serve:
        low, high = self.relay_ports
        args = [
            "serve", "--data-dir", str(self.data_dir),
            "--http", f"{LOOPBACK}:{self.http_port}",
            "--listen", f"{LOOPBACK}:{self.turn_port}",
            "--relay-ports", f"{low}-{high}",
        ]  # fmt: skip
        if self.metrics_port is not None:
            args += ["--metrics", f"{LOOPBACK}:{self.metrics_port}"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*COMMAND, *args],
                env=clean_env(**self.env, **store_env(self.database_url)),
                stdout=log,
                stderr=log,
            )
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:  # not up in time, or the test's own timeout fired: none left behind
            self.kill()
            raise
        self.started_at = time.time()
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"callgate serve exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"callgate serve did not come up:\n{self.log()}")
            with contextlib.suppress(OSError):
                status, _ = http_json(f"{self.url}/healthz")
                if status == 200:
                    return
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"callgate serve did not stop on SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def user_store(root: Path) -> Path:
    """A data dir (private, 0700) holding alice, bob and carol, their passwords hashed cheaply
    (tests/cheap_passwords.py); no server yet."""
    data_dir = root / "data"
    private_data_dir(data_dir)
    store = open_store(sqlite_url(data_dir))
    try:
        accounts = template_accounts(store)
        for handle in USERS:  # audited as `callgate user add` audits them
            accounts.create_user(handle, password=password_of(handle), actor=cli_actor())
    finally:
        store.close()
    return data_dir


def new_serve(
    root: Path, template: Path | None = None, database_url: str | None = None, **env: str
) -> Serve:
    """A data dir with alice, bob and carol (created before serve starts: a copy of `template`
    when given, else made here), free ports; not started. With `database_url` the store is that
    PostgreSQL database (which must hold the users already), the data dir only keys."""
    if database_url is not None:
        data_dir = root / "data"
        data_dir.mkdir(parents=True)
    elif template is not None:
        data_dir = root / "data"
        shutil.copytree(template, data_dir)
    else:
        data_dir = user_store(root)
    return Serve(
        data_dir=data_dir,
        http_port=free_port(),
        turn_port=free_port(),
        metrics_port=free_port(),
        relay_ports=private_relay_range(),
        log_path=root / "serve.log",
        database_url=database_url,
        env={**SERVE_ENV, **env},
    )


# ---- records, read-only, straight from the server's store ----


@cache
def _engine(db: str) -> Engine:
    return create_engine(db)


def rows_of(db: str, table: Table, *where: Any, order: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Rows of `table` in the store at URL `db`, typed as the models declare them (aware UTC
    datetimes, booleans) whatever the backend."""
    query = select(table).where(*where).order_by(*(table.c[name] for name in order))
    with _engine(db).connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


CALLS: Table = Call.__table__  # type: ignore[assignment]
QUALITY: Table = CallQuality.__table__  # type: ignore[assignment]
RELAY_SESSIONS: Table = RelaySession.__table__  # type: ignore[assignment]


def cdr_row(db: str, call_id: str) -> dict[str, Any] | None:
    rows = rows_of(db, CALLS, CALLS.c.call_id == call_id)
    return rows[0] if rows else None


def quality_rows(db: str, call_id: str) -> list[dict[str, Any]]:
    return rows_of(db, QUALITY, QUALITY.c.call_id == call_id, order=("reporter", "direction"))


def relay_sessions(db: str, allocation_ids: Iterable[str]) -> list[dict[str, Any]]:
    return rows_of(db, RELAY_SESSIONS, RELAY_SESSIONS.c.allocation_id.in_(list(allocation_ids)))


def cdr_via_cli(server: Serve, call_id: str) -> dict[str, Any]:
    """The call's record as `callgate cdr list --json` prints it (works while serve runs)."""
    result = server.cli("cdr", "list", "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    found = [r for r in records if r["call_id"] == call_id]
    assert found, f"call {call_id} not in `callgate cdr list`: {[r['call_id'] for r in records]}"
    return found[0]


async def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll `predicate()` (sync; run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what}")
        await asyncio.sleep(interval)


async def final_cdr(db: str, call_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The call's CDR once it is finalized (the hub writes records off the event loop, in
    batches: on a loaded machine that can take seconds, so the deadline is generous)."""

    def finalized() -> dict[str, Any] | None:
        row = cdr_row(db, call_id)
        return row if row is not None and row["end_at"] is not None else None

    return await wait_for(finalized, timeout, f"CDR {call_id} finalized")


# ---- SDK clients ----


async def login(server: Serve, handle: str, password: str | None = None) -> str:
    session = await SignalingClient.login(
        server.url, handle, password or password_of(handle), timeout=30
    )
    return session.token


@contextlib.asynccontextmanager
async def connected(
    server: Serve, handle: str, device: str = "e2e", token: str | None = None
) -> AsyncIterator[SignalingClient]:
    client = await SignalingClient.connect(
        server.url, token or await login(server, handle), device, timeout=30
    )
    try:
        yield client
    finally:
        await client.close()


async def next_of(
    client: SignalingClient, type_: str, call_id: str | None = None, timeout: float = 20.0
) -> dict[str, Any]:
    """The next event of `type_` (for `call_id`), skipping others; AssertionError on timeout
    (generous: a loaded machine delivers late; the happy path returns on arrival)."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        left = deadline - time.monotonic()
        try:
            event = await client.next_event(timeout=max(0.01, left))
        except TimeoutError:
            raise AssertionError(
                f"no {type_} for {call_id} within {timeout} s; saw {seen}"
            ) from None
        if event.get("type") == type_ and (call_id is None or event.get("call_id") == call_id):
            return event
        seen.append(event)


async def no_event(client: SignalingClient, within: float = 0.3) -> None:
    """Nothing arrives for `within` seconds."""
    try:
        event = await client.next_event(timeout=within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected event {event}")


async def raw_request(client: SignalingClient, message: dict[str, Any] | str) -> dict[str, Any]:
    """Send a raw frame (possibly malformed) on the SDK's socket; the reply (by id, else the
    next `error` event)."""
    text = message if isinstance(message, str) else json.dumps(message)
    message_id = None
    if isinstance(message, dict) and isinstance(message.get("id"), str):
        message_id = message["id"]
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        client._pending[message_id] = future  # the SDK's reply routing, reused
        try:
            await client._ws.send(text)
            return await asyncio.wait_for(future, 30)
        finally:
            client._pending.pop(message_id, None)
    await client._ws.send(text)
    return await next_of(client, "error")


# ---- CLI clients ----


_CLI_RUNS = itertools.count(1)
_STDERR: dict[int, Path] = {}  # a softphone process's pid -> the file its stderr goes to


async def start_cli(
    server: Serve, handle: str, *args: str, config_dir: Path
) -> asyncio.subprocess.Process:
    env = clean_env(
        CALLGATE_SERVER=server.url,
        CALLGATE_USER=handle,
        CALLGATE_PASSWORD=password_of(handle),
        CALLGATE_CONFIG_DIR=str(config_dir / f"cfg-{handle}"),
    )
    # stderr to a file: a pipe nobody reads while the call runs would block the softphone once
    # its warnings filled the pipe's 64 KiB (finish() reads the file)
    errors = config_dir / f"{handle}-{next(_CLI_RUNS)}.stderr"
    with errors.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *COMMAND, *args, "--json", env=env, stdout=asyncio.subprocess.PIPE, stderr=sink
        )
    _STDERR[process.pid] = errors
    return process


async def read_event(
    process: asyncio.subprocess.Process, name: str, timeout: float, seen: list[dict[str, Any]]
) -> dict[str, Any]:
    """Read JSON lines from the process's stdout until event `name` (all collected in `seen`)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            errors = _STDERR.get(process.pid)
            tail = errors.read_text(errors="replace")[-3000:] if errors is not None else ""
            raise AssertionError(f"no {name!r} event within {timeout} s; saw {seen}\n{tail}")
        try:
            line = await asyncio.wait_for(process.stdout.readline(), left)
        except TimeoutError:
            continue
        if not line:
            raise AssertionError(f"stdout closed before {name!r}; saw {seen}")
        event = json.loads(line)
        seen.append(event)
        if event.get("event") == name:
            return event


async def finish(
    process: asyncio.subprocess.Process, seen: list[dict[str, Any]], timeout: float = 20.0
) -> tuple[int, list[dict[str, Any]], str]:
    """Wait for exit; (status, every JSON event, stderr)."""
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        seen.append({"event": "test-killed-after-timeout"})
    seen.extend(json.loads(line) for line in out.decode().splitlines() if line.strip())
    assert process.returncode is not None
    errors = _STDERR.pop(process.pid, None)
    text = errors.read_text(errors="replace") if errors is not None else ""
    return process.returncode, seen, text
