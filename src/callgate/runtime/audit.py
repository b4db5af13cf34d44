"""The audit log in a running server: the config.start entry, and signed checkpoints at the start,
at an interval (`audit.checkpoint_interval_s`, default 60 s) and once more on the way out
(docs/audit.md).

A checkpoint is signed only when the log has grown since the last one: an idle server does not
pile up identical checkpoints, and a checkpoint is never itself an audit entry (that would make the
log grow forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from callgate import __version__
from callgate.config import Settings
from callgate.records.audit import AuditLog, StoredCheckpoint, default_key_path
from callgate.records.audit_chain import Entry

log = logging.getLogger(__name__)


def key_path(settings: Settings) -> Path:
    """The audit signing key: `audit.key_file`, else DATA_DIR/keys/audit-ed25519.pem."""
    return settings.audit.key_file or default_key_path(settings.data_dir)


def effective_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON, secrets masked: TURN passwords and REST secret (pydantic shows
    SecretStr as stars) and the database URL's password."""
    dumped = settings.model_dump(mode="json")
    if settings.database_url:
        try:
            url = make_url(settings.database_url)
            dumped["database_url"] = url.render_as_string(hide_password=True)
        except ArgumentError:
            dumped["database_url"] = "(unparsable, hidden)"
    return dumped


def record_start(log_: AuditLog, settings: Settings, command: str) -> Entry:
    """config.start: the effective settings this `callgate <command>` runs with."""
    details = {"command": command, "version": __version__, "settings": effective_settings(settings)}
    return log_.append("system", "config.start", f"config:{command}", details)


class Checkpointer:
    """Signs a checkpoint of the log every `interval` seconds when it has grown."""

    def __init__(self, audit: AuditLog, key: Ed25519PrivateKey, interval: float) -> None:
        self._audit = audit
        self._key = key
        self._interval = interval
        self._signed_size = -1
        self._task: asyncio.Task[None] | None = None
        self.signed = 0

    @property
    def key(self) -> Ed25519PrivateKey:
        """The signing key (export bundles are signed with it too)."""
        return self._key

    def sign_if_grown(self) -> StoredCheckpoint | None:
        """A new checkpoint when the log has grown since the last one signed here, else None."""
        size, _ = self._audit.head()
        if size == self._signed_size or size == 0:
            return None
        checkpoint = self._audit.checkpoint(self._key)
        self._signed_size = checkpoint.size
        self.signed += 1
        log.debug("audit checkpoint signed at size %d", checkpoint.size)
        return checkpoint

    async def start(self) -> None:
        """Sign the log as it is now (a crash in the first interval still leaves a checkpoint
        covering the start), then every `interval` seconds while it grows."""
        await self._sign()
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="audit-checkpoints")

    async def stop(self) -> None:
        """Stop the timer and sign a last checkpoint covering everything written so far."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._sign()

    async def _sign(self) -> None:
        try:
            await asyncio.to_thread(self.sign_if_grown)
        except SQLAlchemyError:
            log.exception("audit checkpoint failed")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._sign()
