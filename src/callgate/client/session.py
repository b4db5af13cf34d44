"""A signed-in session (the bearer token from POST /api/login) and where the CLI keeps it.

The file is `$CALLGATE_CONFIG_DIR/session.json`, else `~/.config/callgate/session.json`, mode 0600:
it holds a bearer token.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from callgate.client.errors import ClientError

SESSION_FILE = "session.json"


@dataclass(frozen=True, slots=True)
class Session:
    server_url: str
    handle: str
    token: str
    expires_at: str = ""
    user: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_login(cls, server_url: str, handle: str, body: dict[str, Any]) -> Session:
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise ClientError("login answer has no token")
        user = body.get("user")
        return cls(
            server_url=server_url,
            handle=handle,
            token=token,
            expires_at=str(body.get("expires_at", "")),
            user=user if isinstance(user, dict) else {},
        )


def config_dir() -> Path:
    configured = os.environ.get("CALLGATE_CONFIG_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".config" / "callgate"


def save_session(session: Session, directory: Path | None = None) -> Path:
    """Write the session file with mode 0600 (created so, never readable by others meanwhile)."""
    folder = directory or config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / SESSION_FILE
    data = json.dumps(asdict(session), indent=2).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def load_session(directory: Path | None = None) -> Session | None:
    """The saved session, or None when there is none; ClientError when the file is unreadable."""
    path = (directory or config_dir()) / SESSION_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read {path}: {exc}") from None
    try:
        return Session(
            server_url=str(raw["server_url"]),
            handle=str(raw["handle"]),
            token=str(raw["token"]),
            expires_at=str(raw.get("expires_at", "")),
            user=dict(raw.get("user") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ClientError(f"{path} is not a callgate session: {exc}") from None
