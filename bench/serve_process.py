"""Shared by the calling benchmarks: a `callgate serve` subprocess on loopback, its users, and
its CPU time.

    with CallgateServe(users={"alice": "pw", "bob": "pw"}) as serve:
        serve.url        # http://127.0.0.1:PORT
        serve.cpu()      # utime+stime of the server process (all threads), seconds
        serve.database   # the SQLite file in the temporary data directory

The data directory is a fresh temporary directory (removed on exit unless `keep` is given).
Users are created before the server starts, on its stopped data directory: with
`callgate user add --data-dir … --password-stdin` (one process per user), or — for the load test's
hundred users — `fast_users=True` creates them in this process through the same library, without
passwords, and issues their bearer tokens (`serve.tokens`) so nobody has to sign in.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY = "callgate serve listening"


def callgate_binary() -> str:
    beside = Path(sys.executable).parent / "callgate"
    if beside.exists():
        return str(beside)
    found = shutil.which("callgate")
    if found is None:
        sys.exit("callgate not found: run from the project's virtual environment")
    return found


def callgate_turn_command(
    port: int, low: int, high: int, *, realm: str, user: str, password: str
) -> list[str]:
    """`callgate turn` on loopback with one static user, relaying to loopback peers only.

    No per-user allocation quota: the load generators hold many allocations as one user
    (turnutils_uclient three a client, one an abandoned probe)."""
    return [
        callgate_binary(),
        "turn",
        "--listen",
        f"{LOOPBACK}:{port}",
        "--relay-ip",
        LOOPBACK,
        "--relay-ports",
        f"{low}-{high}",
        "--realm",
        realm,
        "--user",
        f"{user}:{password}",
        "--allow-peer",
        "127.0.0.0/8",
        "--max-allocations-per-user",
        "0",
        "--log-level",
        "WARNING",
    ]


def free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port: int = udp.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind((LOOPBACK, port))
        except OSError:
            continue
        return port


def free_relay_range(size: int = 400) -> tuple[int, int]:
    """A port range free over UDP at the moment (checked by binding its first and last port)."""
    import random

    while True:
        start = random.randrange(20000, 60000 - size, 2)
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind((LOOPBACK, start))
                b.bind((LOOPBACK, start + size - 1))
        except OSError:
            continue
        return start, start + size - 1


def process_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def add_users_cli(data_dir: Path, users: Mapping[str, str]) -> None:
    for handle, password in users.items():
        done = subprocess.run(
            [callgate_binary(), "user", "add", handle, "--data-dir", str(data_dir),
             "--password-stdin"],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"callgate user add {handle} failed: {done.stderr.strip()}")


def add_users_inprocess(
    data_dir: Path, handles: Iterable[str], database_url: str | None = None
) -> dict[str, str]:
    """Many signaling-only users at once, through the library `callgate user add` uses
    (`AccountService.create_user`), on the stopped data dir; returns a bearer token for each,
    issued like `POST /api/login` issues them (`AccountService.issue_token`).

    No password: argon2 (~0.3-0.5 s per hash or sign-in on these shared cores) would make a
    hundred users take over a minute, and sign-in is outside what the load test times anyway.
    """
    from callgate.accounts.service import AccountService
    from callgate.storage.db import open_store, sqlite_url

    store = open_store(database_url or sqlite_url(data_dir))
    try:
        accounts = AccountService(store, "callgate")
        tokens: dict[str, str] = {}
        for handle in handles:
            user = accounts.create_user(handle, None, (), None)
            tokens[handle], _ = accounts.issue_token(user, device="bench")
        return tokens
    finally:
        store.close()


class CallgateServe:
    def __init__(
        self,
        users: Mapping[str, str],
        *,
        fast_users: bool = False,
        keep: Path | None = None,
        log_level: str = "WARNING",
        extra_env: Mapping[str, str] | None = None,
        profile: Path | None = None,
        database_url: str | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.users = dict(users)
        self.profile = profile  # run serve under cProfile, stats written here when it stops
        self.fast_users = fast_users
        self.keep = keep
        self.log_level = log_level
        self.extra_env = dict(extra_env or {})
        self.database_url = database_url  # None: the SQLite file in the data directory
        self.shared_dir = data_dir  # another node's data directory (SQLite shared by nodes)
        self.process: subprocess.Popen[str] | None = None
        self.tokens: dict[str, str] = {}  # fast_users: handle → bearer token
        self.stderr_lines: list[str] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def database(self) -> Path:
        return self.data_dir / "callgate.sqlite3"

    def cpu(self) -> float:
        return process_cpu(self.pid)

    def __enter__(self) -> CallgateServe:
        if self.shared_dir is not None:
            self.data_dir = self.shared_dir
        elif self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
            self.data_dir = self.keep
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="callgate-bench-")
            self.data_dir = Path(self._tmp.name)
        if self.fast_users and self.users:
            self.tokens = add_users_inprocess(self.data_dir, self.users, self.database_url)
        elif self.users:
            add_users_cli(self.data_dir, self.users)
        http, turn = free_port(), free_port()
        low, high = free_relay_range()
        self.url = f"http://{LOOPBACK}:{http}"
        self.command = [
            callgate_binary(), "serve", "--data-dir", str(self.data_dir),
            "--http", f"{LOOPBACK}:{http}", "--listen", f"{LOOPBACK}:{turn}",
            "--relay-ip", LOOPBACK, "--relay-ports", f"{low}-{high}",
            "--allow-peer", "127.0.0.0/8", "--max-allocations-per-user", "0",
            "--log-level", self.log_level,
        ]  # fmt: skip
        if self.profile is not None:
            self.command[:1] = [sys.executable, "-m", "cProfile", "-o", str(self.profile),
                                callgate_binary()]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
        env.update(self.extra_env)
        if self.database_url is not None:  # in the environment: the URL holds a password
            env["CALLGATE_DATABASE_URL"] = self.database_url
        self.process = subprocess.Popen(
            self.command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
        )
        ready = threading.Event()

        def drain() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                self.stderr_lines.append(line.rstrip())
                if READY in line:
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 30
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(self.stderr_lines[-20:])
                sys.exit(f"callgate serve did not start:\n{tail}")
        return self

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
