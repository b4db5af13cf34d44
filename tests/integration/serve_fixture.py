"""One `callgate serve` subprocess on loopback (SQLite), for the security tests that attack its
HTTP side over real sockets: admin (role admin), alice and bob exist, added before it starts (as
`callgate user add` would, their passwords hashed cheaply: tests/cheap_passwords.py). Each test
that trips a per-address limit connects from an address of its own (127.0.0.x: every 127/8
address reaches a server listening on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from callgate.accounts.audit import cli_actor
from callgate.storage.db import open_store, sqlite_url
from callgate.storage.permissions import private_data_dir
from tests.cheap_passwords import template_accounts
from tests.integration.test_cli import free_port, running, stop

PASSWORDS = {"admin": "root-of-trust-0", "alice": "correct-horse-1", "bob": "battery-staple-2"}


@dataclass(frozen=True)
class WebServer:
    url: str
    root: Path
    log_path: Path
    metrics_url: str | None = None

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        """An HTTP client whose connections come from `source` (a loopback address)."""
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def token(self, handle: str, source: str = "127.0.0.1") -> str:
        with self.client(source) as client:
            body = {"handle": handle, "password": PASSWORDS[handle]}
            answer = client.post("/api/login", json=body)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["token"])


def serve(
    root: Path,
    *extra: str,
    metrics_url: str | None = None,
    prepare: Callable[[Path], None] | None = None,
    **env: str,
) -> Iterator[WebServer]:
    """The users (admin, alice, bob), `prepare(data_dir)`, then `callgate serve ARGS` until the
    generator is closed."""
    data = str(root / "data")
    private_data_dir(root / "data")
    store = open_store(sqlite_url(root / "data"))
    try:  # as `callgate user add` would, with cheap hashes (tests/cheap_passwords.py)
        accounts = template_accounts(store)
        for handle, password in PASSWORDS.items():
            role = "admin" if handle == "admin" else "user"
            accounts.create_user(handle, password=password, role=role, actor=cli_actor())
    finally:
        store.close()
    if prepare is not None:
        prepare(root / "data")
    port, http_port = free_port(), free_port()
    args = ["serve", "--data-dir", data, "--http", f"127.0.0.1:{http_port}",
            "--listen", f"127.0.0.1:{port}", *extra]  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    with running(args, root, port, ready_url=f"{url}/healthz", **env) as proc:
        log_path = root / "server.log"
        yield WebServer(url, root, log_path, metrics_url)
        assert stop(proc) == 0, log_path.read_text()
