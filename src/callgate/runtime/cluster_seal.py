"""What nodes and relays write to Redis for each other is signed (docs/scaling.md, "Trust").

Redis is shared plumbing, not an authority: whoever can write to it must not be able to register
a relay the nodes hand to clients, list a call pair a call-bound relay admits, drain a relay, or
send a node a message. Each entry is sealed with the key SIGNERS names for its kind
(runtime/cluster_keys.py: the node key, the node signing key, or the relay's own key) and
carries the time it was written:

    cg1.<hex HMAC-SHA256 or Ed25519 signature>.<JSON {"at": unix seconds, "data": …}>

The seal covers the entry's kind ("msg", "dev", "snap", "pair", "drain", "relay") and subject
(the relay or node id its key names; a device entry's handle and device id; a message's
recipient), so an entry cannot be moved to another key or read as another kind. A reader checks
it (MACs in constant time, hmac.compare_digest) and the age (at most `max_age` seconds old, at
most SKEW seconds in the future: nodes and relays keep their clocks within that, e.g. by NTP).
Unsigned, forged and stale entries are ignored, counted per kind and reason (`refusals`, on
/metrics), and logged at most once a minute per kind and reason (never their content, never a
key). `node_seal` and `relay_seal` build a node's and a relay's seal from the settings.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from pydantic import SecretStr

from callgate.config import Settings
from callgate.errors import ConfigError
from callgate.keys import write_private_file
from callgate.rate import Window
from callgate.runtime.cluster_keys import (
    MIN_KEY_CHARS,
    ClusterKeys,
    load_cluster_key,
    parse_relay_key,
)

log = logging.getLogger(__name__)

VERSION = "cg1"
SKEW = 10.0  # seconds an entry may seem to come from the future (clocks apart)
LOG_EVERY = 60.0  # seconds between two warnings about the same kind of refused entry
# who signs each kind (runtime/cluster_keys.py): the node key (HMAC), the node signing key
# (Ed25519: relays check it too), or the relay the entry is about (its own relay key, HMAC). A
# drain request comes from a node, or from the relay itself (`callgate turn --drain` on its own
# machine, e.g. `systemctl stop`): a relay can drain no other.
NODE_MAC, NODE_SIGNATURE, RELAY_MAC = "node-mac", "node-signature", "relay-mac"
SIGNERS = {
    "msg": (NODE_MAC,),
    "dev": (NODE_MAC,),
    "snap": (NODE_SIGNATURE,),
    "pair": (NODE_SIGNATURE,),
    "drain": (NODE_SIGNATURE, RELAY_MAC),
    "relay": (RELAY_MAC,),
}
_HMAC_HEX = 64  # an HMAC-SHA256 in hex; an Ed25519 signature is twice as long
_SIGNATURE_HEX = 128
_LOWER_HEX = frozenset("0123456789abcdef")
MAX_ENTRY_BYTES = 64 * 1024  # a relay registration, drain request, pair or directory entry
# larger entries are refused before their MAC is computed: a node's snapshot lists its live
# calls; a message between nodes carries an offer or answer (runtime/node_envelope.py)
MAX_BYTES = {"snap": 16 << 20, "msg": 1 << 20}


def node_seal(settings: Settings) -> ClusterSeal:
    """The seal of a signaling node (or of `callgate turn --drain`): the node key is required.
    While a second key is accepted, every start says so: a rotation left half done lets the
    old key sign for ever (docs/scaling.md, "Changing the node key")."""
    keys = _node_keys(settings)
    if len(keys) > 1:
        log.warning(
            "cluster_key_accepted is set: this node still accepts what the other node key "
            'signs; finish the key change (docs/scaling.md, "Changing the node key", step 3: '
            "remove it, restart, re-issue every relay's key)"
        )
    return ClusterSeal(ClusterKeys.for_node(*keys))


def relay_seal(settings: Settings) -> ClusterSeal:
    """The seal of a registered relay: its own relay key, for its own id."""
    text = _secret(settings.relay_key_file, settings.relay_key, "relay_key")
    if text is None:
        raise ConfigError(
            "a registered relay needs relay_key_file (CALLGATE_RELAY_KEY_FILE) or "
            "CALLGATE_RELAY_KEY: its own key, written on a node by `callgate turn --node-id ID "
            '--issue-relay-key PATH` (docs/scaling.md, "Trust")'
        )
    relay_id, key, public = parse_relay_key(text.decode("ascii", "replace"))
    if relay_id != settings.node_id:
        raise ConfigError(
            f"the relay key is for relay {relay_id!r}, not for {settings.node_id!r} (--node-id)"
        )
    if len(public) > 1:
        log.warning(
            "the relay key names %d node public keys: this relay still believes what the old "
            "node key signs; once the node key change is done, re-issue this relay's key "
            '(docs/scaling.md, "Changing the node key", step 3)',
            len(public),
        )
    return ClusterSeal(ClusterKeys.for_relay(relay_id, key, public))


def issue_relay_key(settings: Settings, relay_id: str, path: Path) -> None:
    """Write relay `relay_id`'s key file (mode 0600, a new file) from this node's key."""
    line = ClusterKeys.for_node(*_node_keys(settings)).relay_key_line(relay_id)
    try:
        write_private_file(path, line.encode("ascii"))
    except FileExistsError:
        raise ConfigError(f"{path} exists: not overwritten") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None


def _node_keys(settings: Settings) -> tuple[bytes, ...]:
    """The node key that signs, then the one also accepted while the key changes (if set)."""
    key = _secret(settings.cluster_key_file, settings.cluster_key, "cluster_key")
    if key is None:
        raise ConfigError(
            "--redis-url needs cluster_key_file (CALLGATE_CLUSTER_KEY_FILE) or "
            f"CALLGATE_CLUSTER_KEY: the node key, at least {MIN_KEY_CHARS} random characters, "
            'the same on every node, mode 0600 (docs/scaling.md, "Trust")'
        )
    accepted = _secret(
        settings.cluster_key_accepted_file, settings.cluster_key_accepted, "cluster_key_accepted"
    )
    keys = (key,) if accepted is None else (key, accepted)
    if any(len(k) < MIN_KEY_CHARS for k in keys):
        raise ConfigError(
            f"a node key (CALLGATE_CLUSTER_KEY…): at least {MIN_KEY_CHARS} characters"
        )
    if accepted == key:
        raise ConfigError("cluster_key_accepted is the node key itself: give the other key")
    return keys


def _secret(path: Path | None, value: SecretStr | None, name: str) -> bytes | None:
    """A key from its file (checked private) or from the environment; not both."""
    if path is not None and value is not None:
        raise ConfigError(f"{name}_file and CALLGATE_{name.upper()} are both set: keep one")
    if path is not None:
        return load_cluster_key(path, setting=f"{name}_file")
    if value is not None:
        return value.get_secret_value().strip().encode()
    return None


class ClusterSeal:
    """Seal entries for Redis and open them again (None for anything not to be trusted), each
    kind with the key SIGNERS names for it."""

    def __init__(self, keys: bytes | ClusterKeys, *, wall: Callable[[], float] = time.time) -> None:
        self.keys = keys if isinstance(keys, ClusterKeys) else ClusterKeys.for_node(keys)
        self._wall = wall
        self._warned: dict[tuple[str, str], Window] = {}  # (kind, why) -> its warnings
        self.refused = 0  # entries ignored since start (for tests and health)
        self.refusals: dict[tuple[str, str], int] = {}  # (kind, why) -> how many (/metrics)

    def seal(self, kind: str, subject: str, data: Any) -> str:
        """The sealed entry; PermissionError if this process holds no key for `kind` (a
        relay sealing a node's kind, or another relay's registration)."""
        body = json.dumps({"at": round(self._wall(), 3), "data": data}, separators=(",", ":"))
        return f"{VERSION}.{self._sign(kind, subject, body)}.{body}"

    def now(self) -> float:
        """The wall clock entries are stamped and judged with."""
        return self._wall()

    def open(self, kind: str, subject: str, raw: bytes | str, max_age: float) -> Any:
        """The data of a sealed entry of this kind and subject, written at most `max_age`
        seconds ago; None (and a rate-limited warning) if unsigned, forged or stale."""
        opened = self.open_stamped(kind, subject, raw, max_age)
        return opened[1] if opened is not None else None

    def open_stamped(
        self, kind: str, subject: str, raw: bytes | str, max_age: float
    ) -> tuple[float, Any] | None:
        """As `open`, with the time the entry says it was written."""
        if len(raw) > MAX_BYTES.get(kind, MAX_ENTRY_BYTES):
            return self._refused(kind, subject, "oversized")
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        version, _, rest = text.partition(".")
        mac, _, body = rest.partition(".")
        if version != VERSION or not mac or not body:
            return self._refused(kind, subject, "unsigned")
        if not self._verify(kind, subject, body, mac):
            return self._refused(kind, subject, "forged")
        try:
            entry = json.loads(body)
            age = self._wall() - float(entry["at"])
        except (ValueError, TypeError, KeyError):
            return self._refused(kind, subject, "malformed")
        if not -SKEW <= age <= max_age:
            return self._refused(kind, subject, "stale")
        return float(entry["at"]), entry.get("data")

    def _refused(self, kind: str, subject: str, why: str) -> tuple[float, Any] | None:
        self.refuse(kind, subject, why)
        return None

    def _sign(self, kind: str, subject: str, body: str) -> str:
        message = _signed(kind, subject, body)
        for signer in SIGNERS[kind]:
            if signer == NODE_SIGNATURE and self.keys.private is not None:
                return self.keys.private.sign(message).hex()
            key = self._mac_key(signer, subject)
            if key is not None:
                return hmac.new(key, message, hashlib.sha256).hexdigest()
        raise PermissionError(f"this process holds no key to sign a {kind} entry")

    def _verify(self, kind: str, subject: str, body: str, mac: str) -> bool:
        """Whether `mac` is an accepted key's over this entry (each MAC compared in constant
        time; which keys are tried is no secret)."""
        if not _LOWER_HEX.issuperset(mac):
            return False  # only what `_sign` writes: lowercase hex, no spaces
        message = _signed(kind, subject, body)
        for signer in SIGNERS[kind]:
            if signer == NODE_SIGNATURE and len(mac) == _SIGNATURE_HEX:
                return self._signature_holds(mac, message)
            keys = self._mac_keys(signer, subject)
            if keys and len(mac) == _HMAC_HEX:
                macs = [hmac.new(key, message, hashlib.sha256).hexdigest() for key in keys]
                return any([hmac.compare_digest(mac.encode(), m.encode()) for m in macs])
        return False  # e.g. a relay reading a node's own kind: never believed

    def _mac_key(self, signer: str, subject: str) -> bytes | None:
        keys = self._mac_keys(signer, subject)
        return keys[0] if keys else None

    def _mac_keys(self, signer: str, subject: str) -> list[bytes]:
        if signer == NODE_MAC:
            return list(self.keys.macs)
        return self.keys.relay_keys(subject) if signer == RELAY_MAC else []

    def _signature_holds(self, signature: str, message: bytes) -> bool:
        try:
            raw = bytes.fromhex(signature)
        except ValueError:
            return False
        for public in self.keys.publics:
            try:
                public.verify(raw, message)
            except (InvalidSignature, ValueError):
                continue
            return True
        return False

    def refuse(self, kind: str, subject: str, why: str) -> None:
        """Count an entry ignored for `why`, and warn about it (once a minute per kind and
        reason; never its content)."""
        self.refused += 1
        self.refusals[kind, why] = self.refusals.get((kind, why), 0) + 1
        warned = self._warned.setdefault((kind, why), Window(LOG_EVERY))
        if warned.hit(time.monotonic()) == 1:
            log.warning(
                "ignored the %s entry %r in Redis: %s (not signed with the key for it, or "
                "too old); more like it are ignored silently for %g s",
                kind, subject[:64], why, LOG_EVERY,
            )  # fmt: skip
        return None


def _signed(kind: str, subject: str, body: str) -> bytes:
    """What a MAC or signature covers: lengths first, so no kind/subject/body split can be
    read as another."""
    return f"{len(kind)}:{kind}|{len(subject)}:{subject}|{body}".encode()
