"""The `callgate` command: the installed script in a subprocess (its version, `turn` and `serve` on
loopback: signals, ports, exit statuses), and user management and option errors in-process
(tests/cli_process.py: the same command without an interpreter start and ~1 s of imports each)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli_process import COMMAND, clean_env, run_in_process
from tests.ports import free_port

MAGIC_COOKIE = 0x2112A442


def callgate(
    *args: str, cwd: Path, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(**env),
        timeout=60,
    )


def binding_request(port: int, timeout: float = 15.0) -> bytes | None:
    """Send a STUN Binding request; the response, or None if none came."""
    transaction = os.urandom(12)
    request = struct.pack("!HHI", 0x0001, 0, MAGIC_COOKIE) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request, ("127.0.0.1", port))
        try:
            data = sock.recv(2048)
        except TimeoutError:
            return None
    assert data[8:20] == transaction
    return data


@contextmanager
def running(
    args: list[str], cwd: Path, stun_port: int, ready_url: str | None = None, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `callgate ARGS` (with `env` added), wait until it answers STUN (and `ready_url`), and
    make sure it is gone afterwards."""
    log = (cwd / "server.log").open("wb")
    proc = subprocess.Popen(
        [*COMMAND, *args], cwd=cwd, env=clean_env(**env), stderr=log, stdout=log
    )
    try:
        deadline = time.monotonic() + 90  # generous: a busy machine starts slowly
        # "listening on" in our own log: a STUN answer alone could come from another process
        # that holds the port (then ours fails to bind and exits).
        while (
            b"listening on" not in (cwd / "server.log").read_bytes()
            or binding_request(stun_port, timeout=0.2) is None
            or not url_ok(ready_url)
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not come up:\n{(cwd / 'server.log').read_text()}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()


def url_ok(url: str | None) -> bool:
    if url is None:
        return True
    try:
        http_get(url)
    except OSError:
        return False
    return True


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=60)  # it closes its records first; slow on a busy machine


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def test_version(tmp_path: Path) -> None:
    result = callgate("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("callgate ")


def test_user_add_list_remove(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    added = run_in_process(
        "user",
        "add",
        "alice",
        "--password-stdin",
        "--data-dir",
        data,
        cwd=tmp_path,
        stdin="s3cret-pw\n",
    )
    assert added.returncode == 0, added.stderr
    again = run_in_process(
        "user",
        "add",
        "alice",
        "--password-stdin",
        "--data-dir",
        data,
        cwd=tmp_path,
        stdin="another-pass\n",
    )
    assert again.returncode == 1 and "exists" in again.stderr
    from_env = run_in_process(
        "user", "add", "bob", "--data-dir", data, cwd=tmp_path, CALLGATE_PASSWORD="second-pass-2"
    )
    assert from_env.returncode == 0, from_env.stderr

    listed = run_in_process("user", "list", "--data-dir", data, cwd=tmp_path)
    assert listed.returncode == 0
    assert "alice" in listed.stdout and "bob" in listed.stdout and "callgate" in listed.stdout

    db = tmp_path / "data" / "callgate.sqlite3"
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT handle, password_hash FROM users").fetchall())
    assert rows["alice"].startswith("$argon2id$")
    assert b"s3cret-pw" not in db.read_bytes()
    assert hashlib.md5(b"alice:callgate:s3cret-pw").hexdigest().encode() not in db.read_bytes()
    # The store is private: data directory 0700, database file 0600.
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600

    removed = run_in_process("user", "remove", "alice", "--data-dir", data, cwd=tmp_path)
    assert removed.returncode == 0
    missing = run_in_process("user", "remove", "alice", "--data-dir", data, cwd=tmp_path)
    assert missing.returncode == 1 and "no user" in missing.stderr
    listed = run_in_process("user", "list", "--data-dir", data, cwd=tmp_path)
    assert "alice" not in listed.stdout and "bob" in listed.stdout


def test_user_disable_enable_passwd_and_json(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    added = run_in_process(
        "user", "add", "dan", "--display-name", "Dan D", "--group", "eng", "--group", "ops",
        "--admin", "--data-dir", data, cwd=tmp_path, CALLGATE_PASSWORD="first-pass-1",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "administrator dan" in added.stdout
    no_password = run_in_process("user", "add", "eve", "--data-dir", data, cwd=tmp_path, stdin="")
    assert no_password.returncode == 2 and "--password-stdin" in no_password.stderr
    bad = run_in_process(
        "user", "add", "Eve!", "--data-dir", data, cwd=tmp_path, CALLGATE_PASSWORD="x"
    )
    assert bad.returncode == 1 and "handle" in bad.stderr

    def listed() -> dict[str, dict[str, object]]:
        result = run_in_process("user", "list", "--json", "--data-dir", data, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return {row["handle"]: row for row in map(json.loads, result.stdout.splitlines())}

    row = listed()["dan"]
    assert (row["display_name"], row["groups"], row["admin"], row["disabled"]) == (
        "Dan D", ["eng", "ops"], True, False,
    )  # fmt: skip
    assert (
        run_in_process("user", "disable", "dan", "--data-dir", data, cwd=tmp_path).returncode == 0
    )
    assert listed()["dan"]["disabled"] is True
    assert run_in_process("user", "enable", "dan", "--data-dir", data, cwd=tmp_path).returncode == 0
    assert listed()["dan"]["disabled"] is False
    missing = run_in_process("user", "disable", "nobody", "--data-dir", data, cwd=tmp_path)
    assert missing.returncode == 1 and "no user" in missing.stderr

    db = tmp_path / "data" / "callgate.sqlite3"
    changed = run_in_process(
        "user", "passwd", "dan", "--password-stdin", "--data-dir", data, cwd=tmp_path,
        stdin="second-pass-2\n",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert b"second-pass-2" not in db.read_bytes()

    calls = run_in_process("cdr", "list", "--data-dir", data, cwd=tmp_path)
    assert calls.returncode == 0 and "no calls" in calls.stdout
    calls = run_in_process(
        "cdr", "list", "--json", "--since", "-1h", "--data-dir", data, cwd=tmp_path
    )
    assert calls.returncode == 0 and calls.stdout == ""
    bad_since = run_in_process(
        "cdr", "list", "--since", "yesterday", "--data-dir", data, cwd=tmp_path
    )
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr


def test_bad_option_names_it_and_exits_2(tmp_path: Path) -> None:
    result = run_in_process("turn", "--relay-ports", "5-3", cwd=tmp_path)
    assert result.returncode == 2
    assert "--relay-ports" in result.stderr
    secret = run_in_process("turn", "--user", ":hunter2", cwd=tmp_path)
    assert secret.returncode == 2 and "hunter2" not in secret.stderr + secret.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_turn_answers_binding_serves_metrics_and_stops_cleanly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    port, metrics_port = free_port(), free_port()
    args = [
        "turn",
        "--listen", f"127.0.0.1:{port}",
        "--realm", "test.example",
        "--user", "alice:topsecret-pw",
        "--auth-secret", "topsecret-rest",
        "--allow-peer", "127.0.0.0/8",
        "--relay-ports", "40000-40999",
        "--metrics", f"127.0.0.1:{metrics_port}",
    ]  # fmt: skip
    with running(args, tmp_path, port) as proc:
        response = binding_request(port)
        assert response is not None
        assert struct.unpack("!HHI", response[:8])[0::2] == (0x0101, MAGIC_COOKIE)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as tcp:  # TCP listener too
            tcp.sendall(struct.pack("!HHI", 0x0001, 0, MAGIC_COOKIE) + os.urandom(12))
            assert struct.unpack("!H", tcp.recv(2048)[:2])[0] == 0x0101
        status, text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert "callgate_turn_allocations_active 0.0" in text
        assert 'callgate_turn_requests_total{method="binding"}' in text
        assert stop(proc, sig) == 0
    log = (tmp_path / "server.log").read_text()
    assert f"listening on udp 127.0.0.1:{port}, tcp 127.0.0.1:{port}" in log
    # one static user for every client: the per-user quota it will hit is said up front
    assert "at most 10 allocations at once per TURN user (--max-allocations-per-user" in log
    assert "topsecret" not in log
    # The standalone relay says it is not bound to calls (`serve` is, by default).
    assert "callgate turn is not call-bound: any authenticated user can relay" in log


async def allocate_and_send(port: int, username: str, password: str) -> tuple[str, int]:
    from aioice import turn

    transport, _ = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol,
        server_addr=("127.0.0.1", port),
        username=username,
        password=password,
    )
    relay = transport.get_extra_info("sockname")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(30)  # generous: a loaded machine relays late
        for _ in range(3):
            transport.sendto(b"hello peer", peer.getsockname())
            await asyncio.sleep(0.05)
        await asyncio.to_thread(peer.recv, 2048)
    # Leave the allocation open: the server must close it and record it on shutdown.
    return relay[0], int(relay[1])


async def test_serve_healthz_metrics_db_users_and_records(tmp_path: Path) -> None:
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    added = callgate(
        "user",
        "add",
        "carol",
        "--password-stdin",
        "--data-dir",
        str(data),
        cwd=tmp_path,
        stdin="charlie-pass-1\n",
    )
    assert added.returncode == 0, added.stderr
    args = [
        "serve",
        "--data-dir", str(data),
        "--http", f"127.0.0.1:{http_port}",
        "--listen", f"127.0.0.1:{port}",
        "--allow-peer", "127.0.0.0/8",
        "--metrics", f"127.0.0.1:{metrics_port}",
    ]  # fmt: skip
    healthz = f"http://127.0.0.1:{http_port}/healthz"
    # Opted out of call-bound relaying (the default of serve): the relay may reach a plain peer.
    env = {"CALLGATE_TURN__CALL_BOUND": "false"}
    with running(args, tmp_path, port, ready_url=healthz, **env) as proc:
        status, body = await asyncio.to_thread(http_get, healthz)
        assert status == 200
        health = json.loads(body)
        assert health["status"] == "ok" and health["database"]["ok"] is True

        # Her sign-in password does not open the relay; the REST credential from `hello` does.
        from aioice.stun import TransactionFailed

        from callgate.client.signaling import SignalingClient

        with pytest.raises(TransactionFailed, match="401"):
            await asyncio.wait_for(allocate_and_send(port, "carol", "charlie-pass-1"), 20)
        base = f"http://127.0.0.1:{http_port}"
        session = await SignalingClient.login(base, "carol", "charlie-pass-1")
        signaling = await SignalingClient.connect(base, session.token, "cli-test", timeout=30)
        turn = next(s for s in signaling.hello["ice_servers"] if "username" in s)
        await signaling.close()
        relay = await asyncio.wait_for(
            allocate_and_send(port, turn["username"], turn["credential"]), 20
        )

        _, metrics = await asyncio.to_thread(http_get, f"http://127.0.0.1:{metrics_port}/metrics")
        assert "callgate_turn_allocations_active 1.0" in metrics
        assert "callgate_turn_allocations_total 1.0" in metrics
        assert stop(proc) == 0

    with sqlite3.connect(data / "callgate.sqlite3") as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM relay_sessions").fetchall()
    assert len(rows) == 1
    row = rows[0]
    assert (row["user"], row["transport"]) == ("carol", "udp")
    assert (row["relay_ip"], row["relay_port"]) == relay
    assert row["end_reason"] == "server-shutdown" and row["ended_at"] is not None
    assert json.loads(row["peers"]) == ["127.0.0.1"]
    assert row["packets_to_peer"] >= 1 and row["bytes_to_peer"] >= len(b"hello peer")
    log = (tmp_path / "server.log").read_text()
    assert "turn.call_bound = false: any signed-in account can relay" in log


def test_turn_exits_1_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = callgate("turn", "--listen", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1
    assert "callgate turn:" in result.stderr


def test_first_serve_creates_admin_once_login_works_and_open_calls_are_closed(
    tmp_path: Path,
) -> None:
    import httpx

    from callgate.records.cdr import CallOpen, CdrRepository
    from callgate.storage.db import open_store, sqlite_url

    data = tmp_path / "data"
    store = open_store(sqlite_url(data))  # a call left open by a server that died
    CdrRepository(store).open(CallOpen("c" * 32, "ann", "ben", datetime.now(UTC)))
    store.close()
    port, http_port = free_port(), free_port()
    args = [
        "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{http_port}",
        "--listen", f"127.0.0.1:{port}",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"
    with running(args, tmp_path, port, ready_url=f"{base}/healthz") as proc:
        found = re.search(r"user 'admin', password (\S+) ", (tmp_path / "server.log").read_text())
        assert found, (tmp_path / "server.log").read_text()
        password = found.group(1)
        login = httpx.post(
            f"{base}/api/login", json={"handle": "admin", "password": password}, timeout=30
        )
        assert login.status_code == 200, login.text
        assert login.json()["user"]["is_admin"] is True
        token = login.json()["token"]
        assert httpx.get(f"{base}/api/calls", timeout=30).status_code == 401
        calls = httpx.get(
            f"{base}/api/calls", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert calls.status_code == 200
        [call] = calls.json()["calls"]
        assert (call["call_id"], call["reason"], call["disposition"], call["ended_by"]) == (
            "c" * 32, "server-restart", "failed", "server",
        )  # fmt: skip
        assert stop(proc) == 0
    first_log = (tmp_path / "server.log").read_text()
    assert first_log.count(password) == 1

    with running(args, tmp_path, port, ready_url=f"{base}/healthz") as proc:
        assert stop(proc) == 0
    assert "password" not in (tmp_path / "server.log").read_text()

    listed = callgate("cdr", "list", "--json", "--data-dir", str(data), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["caller_user"], row["callee_user"], row["reason"]) == (
        "ann",
        "ben",
        "server-restart",
    )
    table = callgate("cdr", "list", "--data-dir", str(data), cwd=tmp_path)
    assert "server-restart" in table.stdout and "ann" in table.stdout
