"""Secrets that `callgate serve` keeps in its data directory (created on first start, mode 0600).

The TURN REST shared secret lives here unless configured: signaling hands out credentials
signed with it and the relays check them, so calls work without any secret in a config file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_secret(data_dir: Path, name: str, *, nbytes: int = 32) -> str:
    """The secret stored in `data_dir/keys/name`, created with fresh random bytes if missing."""
    keys = data_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys / name
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(nbytes)
    write_private_file(path, (value + "\n").encode("ascii"))
    return value


def write_private_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 holding `data`; an existing file is an error (FileExistsError),
    so a secret is never written into a file someone else made or could already read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
