"""Persistence: SQLAlchemy 2 models, Alembic migrations, repositories.

SQLite by default (a file under the data directory); the models use only portable types so the
same migrations run on PostgreSQL.
"""

from __future__ import annotations

from callgate.storage.db import Store, open_store, sqlite_url

__all__ = ["Store", "open_store", "sqlite_url"]
