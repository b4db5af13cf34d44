"""The databases tests run on: a SQLite file, and a throwaway PostgreSQL server of our own.

Usage (the fixtures are imported by tests/conftest.py, so every test can ask for them):

- `database_url` — parametrized over BACKENDS: a test asking for it runs once per backend (test
  ids `[sqlite]` and `[postgresql]`). SQLite: a file in the test's tmp_path, copied from one
  migrated once per worker (migrating each test's file cost ~0.3 s CPU). PostgreSQL: a fresh
  database of its own, already migrated to head (copied from a template migrated once per session),
  dropped after the test. Open it with `open_store(database_url)`.
- `empty_database_url` — the same, but an empty database (no tables): for migration tests.
- `pg_server` — the session's PostgreSQL server (`PgServer`), started on first use: initdb and
  pg_ctl as an unprivileged user (the `postgres` account when running as root), on 127.0.0.1 on a
  free port, fsync off, stopped and deleted at the end. `pg_server.new_database(template)` makes
  more databases (e.g. one per `callgate serve` in the end-to-end tests).

When the PostgreSQL server programs are missing, the PostgreSQL cases are skipped with the reason,
except under CI (CI=true), where they fail: CI must test both. `scripts/test` installs them.
Deselect them for a quick local loop with `-k "not postgresql"`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from callgate.storage.db import DB_FILENAME, create_store_engine, migrate, sqlite_url
from tests.ports import free_port

BACKENDS = ("sqlite", "postgresql")
PG_TEMPLATE = "callgate_migrated"
PG_USER = "callgate_test"
_RUN_AS = "postgres"  # the account that runs the server when the tests run as root


def pg_bindir() -> Path | None:
    """The directory of `initdb`, `pg_ctl` and `postgres`: from PATH, else Debian's
    /usr/lib/postgresql/<version>/bin (the newest version installed)."""
    found = shutil.which("pg_ctl")
    if found is not None:
        bindir = Path(found).resolve().parent
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    candidates = Path("/usr/lib/postgresql").glob("*/bin/postgres")
    versions = sorted(
        (p.parent for p in candidates if (p.parent / "initdb").is_file()),
        key=lambda d: [int(n) for n in re.findall(r"\d+", d.parent.name)],
    )
    return versions[-1] if versions else None


class PgServer:
    """A PostgreSQL cluster in a temporary directory, for one test session."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        # Tests run without fsync; benchmarks (durable=True) keep PostgreSQL's defaults, so a
        # commit they count is on disk.
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="callgate-pg-"))
        self.password = secrets.token_urlsafe(16)
        self.port = 0
        self._owner = _RUN_AS if os.geteuid() == 0 else None
        self._counter = itertools.count(1)
        self._admin: Engine | None = None
        self._templates: set[str] = set()
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-prefetch")
        self._next: Future[str] | None = None
        self._options = ""

    # ---- life cycle ----

    def start(self) -> PgServer:
        if self._owner is not None:
            entry = pwd.getpwnam(self._owner)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._owner is not None:
            os.chown(pwfile, pwd.getpwnam(self._owner).pw_uid, -1)
        self._run(
            "initdb", "-D", str(self.root / "data"), "-U", PG_USER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
            "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        for attempt in range(3):  # the free port may be taken between picking and binding
            self.port = free_port(socket.SOCK_STREAM, both=False)
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.root} -c max_connections=300"
            )
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._options = options
            result = self._pg_ctl_start(check=False)
            if result.returncode == 0:
                return self
            if attempt == 2:
                raise RuntimeError(f"pg_ctl start failed:\n{result.stdout}\n{self.server_log()}")
        return self

    def _pg_ctl_start(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        log = str(self.root / "server.log")
        return self._run(
            "pg_ctl", "-D", str(self.root / "data"), "-l", log, "-o", self._options, "-w",
            "-t", "60", "start", check=check,
        )  # fmt: skip

    def halt(self) -> None:
        """Stop the server (`fast`: its clients are cut off; with the test settings, fsync and
        synchronous_commit off, only a clean stop keeps what was committed), keeping its data
        and port; `resume()` starts it again. For a private server only: other tests' pools
        would break."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._pg_ctl_start()

    def stop(self) -> None:
        self._background.shutdown(wait=True, cancel_futures=True)
        if self._admin is not None:
            self._admin.dispose()
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def server_log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / program), *args]
        if self._owner is not None:
            command = ["runuser", "-u", self._owner, "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, cwd=self.root, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{result.stderr}")
        return result

    # ---- databases ----

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` (with the password: tests check it is never logged)."""
        return f"postgresql+psycopg://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def admin(self) -> Engine:
        """Autocommit connections to the maintenance database (CREATE/DROP DATABASE)."""
        if self._admin is None:
            self._admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        return self._admin

    def new_database(self, template: str | None = PG_TEMPLATE) -> str:
        """A new database, copied from `template` (None: empty); its URL. The default template
        is migrated to head on first use; the next copy of it is made in the background while
        the test runs (a copy costs a checkpoint and ~8 MB of files)."""
        if template != PG_TEMPLATE:
            return self._create(template)
        if template not in self._templates:
            self.migrated_template()
        ready = self._next.result() if self._next is not None else self._create(template)
        self._next = self._background.submit(self._create, template)
        return ready

    def _create(self, template: str | None) -> str:
        name = f"t{next(self._counter)}"
        source = f" TEMPLATE {template}" if template else " TEMPLATE template0"
        with self.admin.connect() as conn:
            if conn.dialect.server_version_info >= (15,):
                # A plain file copy: several times faster than 15's default (WAL_LOG) here.
                source += " STRATEGY FILE_COPY"
            conn.execute(text(f'CREATE DATABASE "{name}"{source}'))
        return self.url(name)

    def make_template(self, name: str) -> str:
        """Create database `name` to copy others from; returns its URL (close every connection to
        it before copying: PostgreSQL copies only an unused template)."""
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        self._templates.add(name)
        return self.url(name)

    def migrated_template(self) -> None:
        url = self.make_template(PG_TEMPLATE)
        engine = create_store_engine(url)
        try:
            migrate(engine)
        finally:
            engine.dispose()

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must test PostgreSQL: run scripts/test, which installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = pg_bindir()
    if bindir is None:
        _missing("PostgreSQL server programs not found (Debian: apt-get install postgresql)")
    assert bindir is not None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_RUN_AS)
        except KeyError:
            _missing(f"running as root and there is no {_RUN_AS!r} account to run PostgreSQL")
    server = PgServer(bindir)
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        pytest.fail(f"could not start a PostgreSQL server for the tests: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store migrated to head, closed (no -wal left), to copy for each test."""
    directory = tmp_path_factory.mktemp("sqlite-template")
    engine = create_store_engine(sqlite_url(directory))
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return directory / DB_FILENAME


def _database(
    request: pytest.FixtureRequest, tmp_path: Path, template: str | None
) -> Iterator[str]:
    if request.param == "sqlite":
        directory = tmp_path / "db"
        if template is not None:
            source: Path = request.getfixturevalue("sqlite_template")
            directory.mkdir(mode=0o700)
            shutil.copyfile(source, directory / DB_FILENAME)
            (directory / DB_FILENAME).chmod(0o600)
        yield sqlite_url(directory)
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.new_database(template)
    yield url
    with contextlib.suppress(Exception):  # the server may be gone if the session is ending
        server.drop_database(url)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty-of-rows store URL per backend (see the module docstring)."""
    yield from _database(request, tmp_path, PG_TEMPLATE)


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database without any table (SQLite: a new file) per backend, for migration tests."""
    yield from _database(request, tmp_path, None)
