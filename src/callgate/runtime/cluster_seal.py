"""What nodes and relays write to Redis for each other is signed (docs/scaling.md, "Trust").

Redis is shared plumbing, not an authority: whoever can write to it must not be able to register
a relay the nodes hand to clients, list a call pair a call-bound relay admits, or drain a relay.
Each such entry is sealed with HMAC-SHA256 under the cluster key (a file of at least 32
characters, mode 0600, the same on every node and relay: `cluster_key_file`) and carries the
time it was written:

    cg1.<hex HMAC>.<JSON {"at": unix seconds, "data": …}>

The MAC covers the entry's kind ("relay", "snap", "pair", "drain", "dev") and subject (the relay
or node id its key names; a device entry's handle and device id), so an entry cannot be moved to another key or read as another kind. A
reader checks the MAC in constant time (hmac.compare_digest) and the age (at most `max_age`
seconds old, at most SKEW seconds in the future: nodes and relays keep their clocks within that,
e.g. by NTP). Unsigned, forged and stale entries are ignored, and logged at most once a minute
per kind and reason (never their content, never the key).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callgate.config import Settings
from callgate.errors import ConfigError
from callgate.rate import Window

log = logging.getLogger(__name__)

VERSION = "cg1"
MIN_KEY_CHARS = 32
MAX_KEY_BYTES = 4096  # a larger key file is refused (not read whole)
SKEW = 10.0  # seconds an entry may seem to come from the future (clocks apart)
LOG_EVERY = 60.0  # seconds between two warnings about the same kind of refused entry


def cluster_seal(settings: Settings) -> ClusterSeal:
    """The seal of a node or relay in a cluster (`redis_url` set): `cluster_key_file` is
    required."""
    if settings.cluster_key_file is None:
        raise ConfigError(
            "--redis-url needs cluster_key_file (CALLGATE_CLUSTER_KEY_FILE): a file of at least "
            f"{MIN_KEY_CHARS} random characters, mode 0600, the same on every node and relay "
            '(docs/scaling.md, "Trust")'
        )
    return ClusterSeal(load_cluster_key(settings.cluster_key_file))


def load_cluster_key(path: Path) -> bytes:
    """The cluster key from `path`: a regular file, not a symbolic link, owned by the running
    user or root, mode 0600 or stricter, at least MIN_KEY_CHARS characters (surrounding
    whitespace ignored). The checks and the read use one descriptor, so the file cannot be
    swapped between them. ConfigError otherwise; the message never holds the key."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"cluster_key_file {path}: a symbolic link, refused") from None
        raise ConfigError(f"cluster_key_file {path}: {exc.strerror}") from None
    try:
        _check_key_file(path, os.fstat(fd))
        raw = _read_bounded(path, fd)
    finally:
        os.close(fd)
    if len(raw) > MAX_KEY_BYTES:
        raise ConfigError(f"cluster_key_file {path}: larger than {MAX_KEY_BYTES} bytes")
    key = raw.strip()
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"cluster_key_file {path}: at least {MIN_KEY_CHARS} characters")
    return key


def _check_key_file(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"cluster_key_file {path}: not a regular file")
    if info.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"cluster_key_file {path}: owned by uid {info.st_uid}, must be this user's "
            f"(uid {os.geteuid()}) or root's"
        )
    if info.st_mode & 0o077:
        mode = info.st_mode & 0o777
        raise ConfigError(f"cluster_key_file {path}: mode {mode:o}, must be 0600 or stricter")


def _read_bounded(path: Path, fd: int) -> bytes:
    """At most MAX_KEY_BYTES + 1 bytes from `fd` (one more tells a file too large)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= MAX_KEY_BYTES:
            chunk = os.read(fd, MAX_KEY_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"cluster_key_file {path}: {exc.strerror}") from None
    return b"".join(chunks)


class ClusterSeal:
    """Seal entries for Redis and open them again (None for anything not to be trusted)."""

    def __init__(self, key: bytes, *, wall: Callable[[], float] = time.time) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"the cluster key needs at least {MIN_KEY_CHARS} characters")
        self._key = key
        self._wall = wall
        self._warned: dict[tuple[str, str], Window] = {}  # (kind, why) -> its warnings
        self.refused = 0  # entries ignored since start (for tests and health)
        self.refusals: dict[tuple[str, str], int] = {}  # (kind, why) -> how many (/metrics)

    def seal(self, kind: str, subject: str, data: Any) -> str:
        body = json.dumps({"at": round(self._wall(), 3), "data": data}, separators=(",", ":"))
        return f"{VERSION}.{self._mac(kind, subject, body)}.{body}"

    def open(self, kind: str, subject: str, raw: bytes | str, max_age: float) -> Any:
        """The data of a sealed entry of this kind and subject, written at most `max_age`
        seconds ago; None (and a rate-limited warning) if unsigned, forged or stale."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        version, _, rest = text.partition(".")
        mac, _, body = rest.partition(".")
        if version != VERSION or not mac or not body:
            return self.refuse(kind, subject, "unsigned")
        if not hmac.compare_digest(mac.encode(), self._mac(kind, subject, body).encode()):
            return self.refuse(kind, subject, "forged")
        try:
            entry = json.loads(body)
            age = self._wall() - float(entry["at"])
        except (ValueError, TypeError, KeyError):
            return self.refuse(kind, subject, "malformed")
        if not -SKEW <= age <= max_age:
            return self.refuse(kind, subject, "stale")
        return entry.get("data")

    def _mac(self, kind: str, subject: str, body: str) -> str:
        # lengths first: no kind/subject/body split can be read as another
        message = f"{len(kind)}:{kind}|{len(subject)}:{subject}|{body}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def refuse(self, kind: str, subject: str, why: str) -> None:
        """Count an entry ignored for `why`, and warn about it (once a minute per kind and
        reason; never its content)."""
        self.refused += 1
        self.refusals[kind, why] = self.refusals.get((kind, why), 0) + 1
        warned = self._warned.setdefault((kind, why), Window(LOG_EVERY))
        if warned.hit(time.monotonic()) == 1:
            log.warning(
                "ignored the %s entry %r in Redis: %s (not signed with this cluster's key, or "
                "too old); more like it are ignored silently for %g s",
                kind, subject[:64], why, LOG_EVERY,
            )  # fmt: skip
        return None
