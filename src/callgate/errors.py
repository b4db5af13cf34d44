"""The callgate exception tree.

    CallgateError
    ├── ConfigError            bad configuration value (message names the option)
    └── StorageError           the database could not be opened or migrated

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
