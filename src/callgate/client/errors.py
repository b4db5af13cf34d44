"""Errors of the Python client.

    CallgateError
    └── ClientError             anything the client could not do
        ├── LoginError          POST /api/login refused (401) or failed
        └── SignalingError      the server answered `error`, refused the socket, or did not answer

`SignalingError.code` is the protocol's error code (`bad-request`, `not-found`, `too-large`, …, see
docs/signaling.md), or one of the client's own: `unauthorized` (socket closed with 4401),
`timeout` (no ack in time), `closed` (the socket went away), `bad-response`.
"""

from __future__ import annotations

from callgate.errors import CallgateError


class ClientError(CallgateError):
    """Base of the client's errors."""


class LoginError(ClientError):
    """Sign-in refused or failed; the message says why."""


class SignalingError(ClientError):
    """An `error` reply, a refused socket, or no reply in time."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
