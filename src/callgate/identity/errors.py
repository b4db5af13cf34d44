"""Errors of directory sign-in (callgate.identity)."""

from __future__ import annotations

from callgate.errors import CallgateError


class DirectoryUnavailable(CallgateError):
    """The directory could not be reached or refused the service account: nobody can be checked.
    The message names the cause (host, TLS, bind) and never holds a password."""
