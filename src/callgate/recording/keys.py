"""The recording master key and the per-recording keys it wraps.

The master key is 32 random bytes, base64 in `data_dir/keys/recording-master.key` (mode 0600,
created on first start beside the audit signing key) or in the environment variable
`CALLGATE_RECORDING_MASTER_KEY`. Each recording gets a fresh AES-256 key, stored only wrapped
with the master key (AES Key Wrap, RFC 3394).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from callgate.keys import write_private_file

MASTER_KEY_FILENAME = "recording-master.key"
MASTER_KEY_ENV = "CALLGATE_RECORDING_MASTER_KEY"
KEY_BYTES = 32


class MasterKeyError(Exception):
    """The master key is missing, unreadable or malformed (the message says which)."""


def master_key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / MASTER_KEY_FILENAME


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{where}: not base64") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{where}: {len(key)} bytes, need {KEY_BYTES}")
    return key


def load_master_key(
    path: Path, env: Mapping[str, str] | None = None, *, create: bool = True
) -> bytes:
    """The master key from the environment, else from `path` (created when missing and `create`).

    A key file readable by others is refused: it would let anyone who can read the data
    directory decrypt every recording."""
    environ = os.environ if env is None else env
    if environ.get(MASTER_KEY_ENV):
        return _decode(environ[MASTER_KEY_ENV], MASTER_KEY_ENV)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        if not create:
            raise MasterKeyError(f"{path}: missing") from None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_BYTES)
        write_private_file(path, base64.b64encode(key) + b"\n")
        return key
    if mode & 0o077:
        raise MasterKeyError(
            f"{path}: mode {mode:o}, must not be readable by group or others (0600)"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise MasterKeyError(f"{path}: {exc}") from None
    return _decode(text, str(path))


def key_id(master: bytes) -> str:
    """A short public name of the master key (which key wrapped a recording's key)."""
    return hashlib.sha256(b"callgate-recording-master" + master).hexdigest()[:16]


def new_recording_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def wrap(master: bytes, key: bytes) -> str:
    return base64.b64encode(aes_key_wrap(master, key)).decode("ascii")


def unwrap(master: bytes, wrapped: str) -> bytes:
    try:
        return aes_key_unwrap(master, base64.b64decode(wrapped))
    except (InvalidUnwrap, binascii.Error, ValueError):
        raise MasterKeyError("the recording key does not unwrap with this master key") from None
