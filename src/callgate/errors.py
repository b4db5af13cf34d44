"""The callgate exception tree.

    CallgateError
    ├── ConfigError            bad configuration value (message names the option)
    ├── StorageError           the database could not be opened or migrated
    └── AccountError           an account operation was refused
        ├── InvalidAccountValue    a handle, name, group or password is not acceptable (ValueError)
        ├── UserExistsError        the handle is taken
        └── UnknownUserError       no account with this handle (LookupError)

Wire decoding has its own error, `callgate.stun.StunDecodeError` (a ValueError), because
codecs are pure and raise on malformed bytes; servers catch it, drop the packet and count it.
"""

from __future__ import annotations


class CallgateError(Exception):
    """Base of all callgate errors."""


class ConfigError(CallgateError):
    """A configuration value is invalid; the message names the option."""


class StorageError(CallgateError):
    """The store could not be opened or migrated."""


class AccountError(CallgateError):
    """An account operation was refused; the message says why (and never holds a password)."""


class InvalidAccountValue(AccountError, ValueError):
    """A handle, display name, group or password is not acceptable."""


class UserExistsError(AccountError):
    """An account with this handle already exists."""


class UnknownUserError(AccountError, LookupError):
    """No account has this handle."""
