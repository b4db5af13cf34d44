"""Sign-in attacks on a running `callgate serve` (issue 12 item 2): password guessing is slowed
per account and per address without telling which accounts exist; weak passwords are refused
when they are set, through the API and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import PASSWORDS, WebServer, serve

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    # A first delay of a minute: the refusals below cannot depend on how fast this machine is.
    # (The delays growing and passing are tested on a manual clock, test_login_throttle.py.)
    yield from serve(tmp_path_factory.mktemp("login"), CALLGATE_LIMITS__LOGIN_DELAY_S="60")


def attempts(server: WebServer, handle: str, password: str, n: int, source: str) -> list[int]:
    with server.client(source) as client:
        return [
            client.post("/api/login", json={"handle": handle, "password": password}).status_code
            for _ in range(n)
        ]


def test_guessing_one_account_is_throttled_even_the_right_password(server: WebServer) -> None:
    # Each guess from another address: the per-account limit alone stops the attack.
    codes = [attempts(server, "alice", f"guess-{i}", 1, f"127.0.1.{i + 1}")[0] for i in range(8)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    with server.client("127.0.1.100") as client:
        answer = client.post("/api/login", json={"handle": "alice", "password": PASSWORDS["alice"]})
    assert answer.status_code == 429  # nothing is checked while the account waits
    assert answer.json()["detail"].startswith("too many failed sign-ins: retry in ")
    assert 1 <= int(answer.headers["Retry-After"]) <= 60


def test_an_unknown_account_is_throttled_the_same_way(server: WebServer) -> None:
    known = attempts(server, "bob", "wrong-password", 7, "127.0.2.1")
    unknown = attempts(server, "nobody", "wrong-password", 7, "127.0.2.2")
    assert known == unknown == [401] * 5 + [429] * 2


def test_one_address_guessing_many_accounts_is_throttled(server: WebServer) -> None:
    source = "127.0.3.1"
    codes = [attempts(server, f"user{i}", "wrong-password", 1, source)[0] for i in range(22)]
    assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}
    # Another address is not affected.
    assert attempts(server, "user99", "wrong-password", 1, "127.0.3.2") == [401]


def test_throttling_is_audited_once_per_run(server: WebServer) -> None:
    attempts(server, "carl", "wrong-password", 9, "127.0.4.1")
    with server.client() as client:
        headers = {"Authorization": f"Bearer {server.token('admin')}"}
        found = client.get(
            "/api/audit/entries", params={"action": "auth.login_throttled"}, headers=headers
        )
    assert found.status_code == 200, found.text
    entries = [e for e in found.json()["items"] if e["details"]["handle"] == "carl"]
    assert len(entries) == 1 and entries[0]["details"]["limit"] == "account"


@pytest.mark.parametrize(
    ("password", "why"),
    [("x", "shorter than 8"), ("seven77", "shorter than 8"), ("my-{}-password", "handle")],
)
def test_weak_passwords_are_refused_by_the_api(server: WebServer, password: str, why: str) -> None:
    with server.client("127.0.5.1") as client:
        headers = {"Authorization": f"Bearer {server.token('admin', '127.0.5.1')}"}
        created = client.post(
            "/api/users",
            json={"handle": "zed", "password": password.format("zed")},
            headers=headers,
        )
        assert created.status_code == 422 and why in created.text
        assert password.format("zed") not in created.text
        changed = client.put("/api/users/bob/password", json={"password": password.format("bob")},
                             headers=headers)  # fmt: skip
        assert changed.status_code == 422 and why in changed.text


def test_weak_passwords_are_refused_by_the_cli(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    short = callgate("user", "add", "eve", "--data-dir", data, cwd=tmp_path, CALLGATE_PASSWORD="x")
    assert short.returncode == 1 and "shorter than 8" in short.stderr
    added = callgate("user", "add", "eve", "--data-dir", data, cwd=tmp_path,
                     CALLGATE_PASSWORD="long-enough-1")  # fmt: skip
    assert added.returncode == 0, added.stderr
    weak = callgate("user", "passwd", "eve", "--data-dir", data, cwd=tmp_path,
                    CALLGATE_PASSWORD="EVE-2026-abc")  # fmt: skip
    assert weak.returncode == 1 and "contains the handle" in weak.stderr
