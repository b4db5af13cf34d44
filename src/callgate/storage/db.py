"""Opening the store: engine, session factory, and Alembic migrations run to head in-process.

Two backends, one code path: SQLite (the default: a file in the data directory) and PostgreSQL
(`postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE`; `postgresql://` and `postgres://` mean
the same driver, psycopg 3). A URL is only ever shown with its password masked (`display_url`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from callgate.errors import StorageError
from callgate.storage.permissions import private_sqlite_file

if TYPE_CHECKING:  # alembic costs a CLI start-up ~0.4 s CPU: imported when migrating
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The newest migration (tests/unit/storage/test_storage.py checks it against the scripts). A store
# already there opens without Alembic, whose import and script scan cost each CLI command ~0.3 s CPU.
HEAD_REVISION = "0035"
DB_FILENAME = "callgate.sqlite3"
# Seconds to wait for a PostgreSQL server to accept a connection (unless the URL sets
# `connect_timeout`): an unreachable server is an error at start, not a hang.
PG_CONNECT_TIMEOUT = 10
# Key of the PostgreSQL advisory lock held while migrating: nodes starting together migrate one
# after the other (the others then find the schema at head).
MIGRATION_LOCK_KEY = 0x63616C6C67617465  # "callgate"
PG_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


@dataclass(frozen=True, slots=True)
class Store:
    engine: Engine
    sessions: sessionmaker[Session]
    # Single-statement reads made on every call attempt (policy/store.py). On PostgreSQL a pool
    # of its own, in autocommit (no BEGIN and ROLLBACK round trips) and without the liveness
    # ping per checkout (one more): its users retry once on a fresh connection when a pooled
    # one turns out dead (`is_disconnect`). None: `engine` (SQLite begins nothing for a read).
    reads: Engine | None = None

    @property
    def read_engine(self) -> Engine:
        return self.reads if self.reads is not None else self.engine

    def close(self) -> None:
        self.engine.dispose()
        if self.reads is not None:
            self.reads.dispose()


def sqlite_url(data_dir: Path) -> str:
    """The default database: a SQLite file in the data directory."""
    return f"sqlite:///{(data_dir / DB_FILENAME).resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL keeps every committed transaction across a process crash (only an
        # OS crash or power loss can lose the last ones) and saves an fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def display_url(url: str | URL) -> str:
    """`url` fit for logs and messages: the password replaced by ***."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError:
        return "(not a valid database URL)"
    return parsed.render_as_string(hide_password=True)


URL_FORMS = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"


def check_url(url: str) -> URL:
    """`url` parsed; ValueError (never repeating the URL: it may hold a password) if it is not
    a database URL."""
    try:
        return make_url(url)
    except ArgumentError:
        # SQLAlchemy's own message repeats the whole URL, password included.
        raise ValueError(f"not a database URL: expected {URL_FORMS}") from None


def _parse(url: str) -> URL:
    try:
        parsed = check_url(url)
    except ValueError:
        raise StorageError(f"database URL is not valid: expected {URL_FORMS}") from None
    driver = PG_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def _pg_connect_args(url: URL) -> dict[str, Any]:
    return {} if "connect_timeout" in url.query else {"connect_timeout": PG_CONNECT_TIMEOUT}


def _read_engine(engine: Engine) -> Engine | None:
    """`Store.reads` for `engine`: on PostgreSQL autocommit, no pre-ping; elsewhere None."""
    if engine.dialect.name != "postgresql":
        return None
    return create_engine(
        engine.url, isolation_level="AUTOCOMMIT", connect_args=_pg_connect_args(engine.url)
    )


def create_store_engine(url: str) -> Engine:
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    try:
        if backend == "postgresql":
            return create_engine(parsed, pool_pre_ping=True, connect_args=_pg_connect_args(parsed))
        if backend != "sqlite":
            return create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise StorageError(
            f"no database driver for {display_url(parsed)} ({exc}); "
            "use sqlite:///PATH or postgresql+psycopg://…"
        ) from None
    if parsed.database and parsed.database != ":memory:":
        private_sqlite_file(Path(parsed.database))
    engine = create_engine(parsed)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _alembic(engine: Engine, action: Callable[[Config, str], None], revision: str) -> None:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Alembic's batch mode rebuilds a SQLite table for most ALTERs (copy, DROP, rename);
            # with foreign keys on, that DROP cascades to the rows pointing at the table (every
            # sign-in token of `users`). Off for the migration (it must be set outside a
            # transaction), and the result checked before it commits.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                cfg.attributes["connection"] = connection
                action(cfg, revision)
                if sqlite:
                    _check_foreign_keys(connection)
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def _check_foreign_keys(connection: Connection) -> None:
    """Stop at a SQLite migration that left a row pointing at nothing (never start on it)."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise StorageError(
            f"migration left {len(broken)} row(s) with a broken foreign key "
            f"(first: {table} row {rowid} -> {parent})"
        )


def _at_head(engine: Engine) -> bool:
    """Whether the store's Alembic version is exactly HEAD_REVISION (no table yet: no)."""
    return _revisions(engine) == [HEAD_REVISION]


def _revisions(engine: Engine) -> list[str]:
    """The store's Alembic versions ([] for an empty database)."""
    with engine.connect() as connection:
        try:
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        except DBAPIError:
            return []
    return [str(row[0]) for row in rows]


def _require_head(engine: Engine) -> None:
    found = _revisions(engine)
    if found != [HEAD_REVISION]:
        engine.dispose()
        raise StorageError(
            f"the database {display_url(engine.url)} is at schema revision "
            f"{', '.join(found) or 'none (no callgate tables)'}; this callgate needs "
            f"{HEAD_REVISION}. A relay never migrates the schema: start a signaling node of "
            "this same version on the database first (`callgate serve` migrates at start)"
        )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations on `engine` up to `revision` (no alembic.ini needed)."""
    from alembic import command

    _alembic(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Run Alembic migrations down to `revision` ("base" = empty database)."""
    from alembic import command

    _alembic(engine, command.downgrade, revision)


def _reason(exc: SQLAlchemyError, url: URL) -> str:
    """The driver's own words (first line), without SQL or SQLAlchemy's links, never the password."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(source).strip().splitlines()
    reason = lines[0] if lines else type(source).__name__
    if url.password:
        reason = reason.replace(str(url.password), "***")
    return reason


def open_store(url: str, *, migrate_schema: bool = True) -> Store:
    """Open the database at `url`, migrate it to head and return engine + session factory.
    `migrate_schema=False` (a registered relay, whose login need not own the schema): never
    migrate; StorageError unless the schema is exactly at HEAD_REVISION."""
    engine = create_store_engine(url)
    try:
        if not migrate_schema:
            _require_head(engine)
        elif not _at_head(engine):
            migrate(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StorageError(
            f"could not open or migrate the database {display_url(engine.url)}: "
            f"{_reason(exc, engine.url)}"
        ) from exc
    log.debug("store open and migrated: %s", display_url(engine.url))
    return Store(
        engine=engine,
        sessions=sessionmaker(engine, expire_on_commit=False),
        reads=_read_engine(engine),
    )
