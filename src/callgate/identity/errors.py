"""Errors of directory sign-in (callgate.identity)."""

from __future__ import annotations

from callgate.errors import CallgateError


class DirectoryUnavailable(CallgateError):
    """The directory could not be reached or refused the service account: nobody can be checked.
    The message names the cause (host, TLS, bind) and never holds a password."""


class ProviderError(CallgateError):
    """The OpenID provider could not be reached or answered something unusable."""


class DeviceGrantUnavailable(ProviderError):
    """The provider does not offer the device authorization grant (RFC 8628)."""


class TokenRejected(CallgateError):
    """An ID token failed a check; the message names which (never the token)."""


class SsoFailed(CallgateError):
    """A single sign-on attempt that cannot finish; `status` is the HTTP status to answer."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
