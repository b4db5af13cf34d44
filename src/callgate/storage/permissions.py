"""Private files: the data directory is 0700, the SQLite store (with its -wal/-shm) and the keys 0600.

New ones are created that way; existing ones found looser (group or others may read) are tightened
at start, each with a log line, since they hold password hashes, tokens' hashes and signing keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def tighten(path: Path, mode: int) -> bool:
    """Clear the group/other bits of `path` beyond `mode`; True when it was changed."""
    try:
        current = stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return False
    if path.is_symlink() or not current & 0o077:
        return False
    path.chmod(current & mode)
    log.warning(
        "tightened permissions of %s from %04o to %04o (it holds secrets)",
        path,
        current,
        current & mode,
    )
    return True


def private_dir(path: Path) -> None:
    """`path` exists as a directory only its owner can enter (created 0700, else tightened)."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    tighten(path, PRIVATE_DIR)


def private_sqlite_file(path: Path) -> None:
    """The SQLite file exists with mode 0600 before SQLite opens it (SQLite gives its -wal and
    -shm files the database file's mode); existing ones are tightened."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    for candidate in [path, *(path.with_name(path.name + end) for end in SQLITE_SIDE_FILES)]:
        tighten(candidate, PRIVATE_FILE)


def private_data_dir(data_dir: Path) -> None:
    """The data directory 0700 and its `keys/` directory and key files 0600."""
    private_dir(data_dir)
    keys = data_dir / "keys"
    if keys.is_dir():
        tighten(keys, PRIVATE_DIR)
        for item in keys.iterdir():
            if item.is_file():
                tighten(item, PRIVATE_FILE)
