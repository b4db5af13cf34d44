"""A private Redis server for the tests (Debian's `redis-server`, installed by scripts/test).

`redis_server` (a fixture, per test): a `redis-server` on 127.0.0.1 on a free port, no
persistence, no other client; `stop()` and `start()` again on the same port let a test take
Redis away and bring it back. Missing program: skipped, or failed under CI=true.
`cluster_key` is the node key file (mode 0600) for the nodes (CALLGATE_CLUSTER_KEY_FILE);
`relay_key(id)` writes a registered relay's own key file, as `callgate turn --issue-relay-key`
does (CALLGATE_RELAY_KEY_FILE; runtime/cluster_keys.py).

`acl_redis_server` (a fixture): the same, started with `aclfile` = the shipped
deploy/redis-users.acl filled in as docs/scaling.md tells an operator (passwords, one relay line
per relay id: here relay eu1), plus a test administrator: `url` logs in as that administrator,
`user_url(name)` as one of the file's users; a client without a user is refused (NOAUTH).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.runtime.cluster_keys import ClusterKeys

LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


DEPLOY_ACL = Path(__file__).resolve().parents[1] / "deploy" / "redis-users.acl"
ADMIN = "callgate-test-admin"


def filled_acl(passwords: dict[str, str], relay_ids: list[str]) -> str:
    """deploy/redis-users.acl as an operator fills it in (docs/scaling.md, "Trust"): each
    CHANGE-ME password replaced, the relay line repeated with each relay's id; `passwords`
    gets each user's password."""
    lines = []
    for line in DEPLOY_ACL.read_text().splitlines():
        for relay_id in relay_ids if "RELAY_ID" in line else [""]:
            filled = line.replace("RELAY_ID", relay_id)
            name = filled.split()[1]
            if ">CHANGE-ME" in filled:
                passwords[name] = secrets.token_urlsafe(24)
                filled = " ".join(
                    f">{passwords[name]}" if word.startswith(">CHANGE-ME") else word
                    for word in filled.split()
                )
            lines.append(filled)
    return "\n".join(lines) + "\n"


class RedisServer:
    def __init__(self, program: str, root: Path, *, acl_relays: list[str] | None = None) -> None:
        self.program = program
        self.root = root
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.passwords: dict[str, str] = {}
        self.aclfile: Path | None = None
        if acl_relays is not None:
            text = filled_acl(self.passwords, acl_relays)
            self.passwords[ADMIN] = secrets.token_urlsafe(24)
            text += f"user {ADMIN} on >{self.passwords[ADMIN]} ~* &* +@all\n"
            self.aclfile = root / "users.acl"
            fd = os.open(self.aclfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as acl:
                acl.write(text)
        self.cluster_key = root / "cluster.key"
        fd = os.open(self.cluster_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as key:
            key.write(secrets.token_urlsafe(32) + "\n")

    def relay_key(self, relay_id: str) -> Path:
        """Relay `relay_id`'s key file, issued from the node key."""
        keys = ClusterKeys.for_node(self.cluster_key.read_text().strip().encode())
        path = self.root / f"relay-{relay_id}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as key:
            key.write(keys.relay_key_line(relay_id))
        return path

    @property
    def url(self) -> str:
        return self.user_url(ADMIN) if self.aclfile else f"redis://{LOOPBACK}:{self.port}/0"

    def user_url(self, name: str) -> str:
        return f"redis://{name}:{self.passwords[name]}@{LOOPBACK}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.program, "--bind", LOOPBACK, "--port", str(self.port), "--save", "",
            "--appendonly", "no", "--dir", str(self.root), "--protected-mode", "yes",
            "--logfile", str(self.root / "redis.log"),
        ]  # fmt: skip
        if self.aclfile is not None:
            args += ["--aclfile", str(self.aclfile)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.root / "redis.log"
                raise RuntimeError(f"redis-server did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _served(tmp_path, None)


@pytest.fixture
def acl_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _served(tmp_path, ["eu1"])


def _served(tmp_path: Path, acl_relays: list[str] | None) -> Iterator[RedisServer]:
    program = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(program):
        reason = "redis-server not found (Debian: apt-get install redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; scripts/test installs it")
        pytest.skip(reason)
    root = tmp_path / "redis"
    root.mkdir()
    server = RedisServer(program, root, acl_relays=acl_relays).start()
    try:
        yield server
    finally:
        server.stop()
