"""The callgate exception tree: every error callgate raises for a caller to handle.

    CallgateError
    ├── ConfigError              bad configuration value (message names the option)
    ├── StorageError             the database could not be opened or migrated
    ├── AccountError             an account operation was refused
    │   ├── InvalidAccountValue      a handle, name, group or password is not acceptable (ValueError)
    │   ├── UserExistsError          the handle (or a static TURN user's name) is taken
    │   └── UnknownUserError         no account with this handle (LookupError)
    ├── PolicyError              a policy or group change was refused (policy/errors.py)
    │   ├── InvalidPolicyValue       a field is not acceptable (ValueError)        → 422
    │   ├── UnknownPolicyObject      no such rule or group (LookupError)           → 404
    │   └── PolicyConflict           a name is taken, a group is still used, …     → 409
    ├── StunDecodeError          malformed STUN bytes (stun/message.py; ValueError)
    ├── ProtocolError            a signaling message the server refuses (signaling/messages.py;
    │                            ValueError; `code` is the protocol's error code)
    ├── RecordWriteError         a call record could not be written (records/writer.py)
    ├── BadCursor                a listing cursor this server did not hand out (records/query.py;
    │                            ValueError)
    ├── CheckpointError          an audit checkpoint is malformed or its signature fails
    │                            (records/audit_chain.py; ValueError)
    ├── DirectoryUnavailable     the LDAP directory cannot be reached or refused the service
    │                            account (identity/errors.py)                  → 503 at sign-in
    ├── ProviderError            the OpenID provider cannot be reached or answered something
    │                            unusable (identity/errors.py)
    ├── TokenRejected            an ID token failed a check; says which (identity/errors.py)
    ├── SsoFailed                a single sign-on attempt cannot finish; `status` and `reason`
    │                            (identity/errors.py)
    └── ClientError              the Python client could not do something (client/errors.py)
        ├── LoginError               sign-in refused or failed
        └── SignalingError           an `error` reply, a refused socket, or no reply in time

Errors that belong to one package are defined beside their code and listed here. Codecs are
pure and raise StunDecodeError on malformed bytes; servers catch it, drop the packet and count it.
Exceptions used only as control flow inside their code (turn/allocate.py's `Reject`, the call
engine's `Refusal` in signaling/engine_base.py, turn/relay.py's `InsufficientCapacity`, which
allocate.py turns into 508) never reach a caller and are not part of the tree. `callgate detect`
reports capture errors (detect/capture `CaptureError`; a bad `--lists` file is its subclass
`RangeError`) as exit status 1.
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
