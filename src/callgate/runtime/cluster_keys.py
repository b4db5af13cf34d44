"""Which key signs what between nodes and relays (docs/scaling.md, "Trust").

Nodes and relays trust each other differently, so they hold different keys:

- the **node key** (`cluster_key_file`, or CALLGATE_CLUSTER_KEY): on signaling nodes only (and
  with `callgate turn --drain`, which acts for them). It is never used as is: every key below
  is derived from it with HKDF-SHA256 (RFC 5869; no salt, one `info` label per use), so no two
  uses share a key:
  - the **node MAC key** ("callgate node mac key v2"): HMAC-SHA256 over what only nodes read,
    the messages between nodes ("msg") and the device directory ("dev");
  - the **node signing key**, Ed25519 (seed: "callgate node signing key v2"): it signs what
    relays read too — snapshots ("snap"), call pairs ("pair") and drain requests ("drain"). A
    relay holds only its public half: it checks them and can forge none;
  - **each relay's key** ("callgate relay key v2|" + relay id): the key that relay signs its
    registration ("relay") with. Nodes derive it for any relay id.
- a **relay key** (`relay_key_file`, or CALLGATE_RELAY_KEY) on a relay's machine, one line
  written by `callgate turn --node-id ID --issue-relay-key PATH` on a node:

      cgr2:<relay id>:<base64url relay key>:<base64url node public key>[,<another>]

  It lets that relay register and beat as itself, and read the nodes' signed entries; not
  register as another relay, not speak as a node (no message, no snapshot, no pair, no drain
  request, no directory entry signed with it is believed).

While the node key changes, a node also accepts one other node key (`cluster_key_accepted_file`),
and the relay keys it issues name both public keys (docs/scaling.md, "Changing the node key").
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from callgate.errors import ConfigError

MIN_KEY_CHARS = 32
MAX_KEY_BYTES = 4096  # a larger key file is refused (not read whole)
RELAY_KEY_VERSION = "cgr2"  # cgr1: keys derived before HKDF, refused (re-issue them)
MAX_ACCEPTED = 1  # node keys accepted beside the one that signs (a key change: docs/scaling.md)
_MAC = b"callgate node mac key v2"
_SIGNING = b"callgate node signing key v2"
_RELAY = b"callgate relay key v2|"


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The keys one process holds: a node's (`nodes` set) or one relay's (`relay_id` set). The
    first node key and public key sign; the others (a key change under way) are only accepted."""

    publics: tuple[Ed25519PublicKey, ...]  # check what nodes sign, for relays and nodes alike
    nodes: tuple[bytes, ...] = ()
    macs: tuple[bytes, ...] = ()  # the node MAC key of each node key
    private: Ed25519PrivateKey | None = None
    relay_id: str | None = None
    relay: bytes | None = None

    @classmethod
    def for_node(cls, node_key: bytes, *accepted: bytes) -> ClusterKeys:
        if any(len(key) < MIN_KEY_CHARS for key in (node_key, *accepted)):
            raise ValueError(f"a node key needs at least {MIN_KEY_CHARS} characters")
        keys = (node_key, *accepted)
        privates = [_signing_key(key) for key in keys]
        publics = tuple(private.public_key() for private in privates)
        macs = tuple(derive(key, _MAC) for key in keys)
        return cls(publics=publics, nodes=keys, macs=macs, private=privates[0])

    @classmethod
    def for_relay(
        cls, relay_id: str, relay_key: bytes, publics: tuple[Ed25519PublicKey, ...]
    ) -> ClusterKeys:
        return cls(publics=publics, relay_id=relay_id, relay=relay_key)

    @property
    def node(self) -> bytes | None:
        """The node key this process signs with (None on a relay)."""
        return self.nodes[0] if self.nodes else None

    def relay_key(self, relay_id: str) -> bytes | None:
        """The key relay `relay_id` signs its registration with, if this process may know it."""
        keys = self.relay_keys(relay_id)
        return keys[0] if keys else None

    def relay_keys(self, relay_id: str) -> list[bytes]:
        """The keys a registration of relay `relay_id` is accepted under: one per node key
        (nodes), or the relay's own."""
        if self.nodes:
            return [derive(n, _RELAY + relay_id.encode()) for n in self.nodes]
        return [self.relay] if self.relay is not None and relay_id == self.relay_id else []

    def relay_key_line(self, relay_id: str) -> str:
        """The relay key file of relay `relay_id` (a node's keys only): the relay key derived
        from the signing node key, and every public key the nodes accept now."""
        key = self.relay_key(relay_id)
        if self.node is None or key is None:
            raise ValueError("only a node issues relay keys")
        raw = [public.public_bytes(Encoding.Raw, PublicFormat.Raw) for public in self.publics]
        publics = ",".join(_b64(public) for public in raw)
        return f"{RELAY_KEY_VERSION}:{relay_id}:{_b64(key)}:{publics}\n"


def parse_relay_key(text: str) -> tuple[str, bytes, tuple[Ed25519PublicKey, ...]]:
    """(relay id, relay key, node public keys) of a relay key line; ConfigError (never holding
    the key) if malformed."""
    parts = text.strip().split(":")
    if parts[0] == "cgr1":
        raise ConfigError(
            "the relay key is a cgr1 key, issued by a callgate that derived keys before HKDF: "
            "no node accepts it; issue a new one on a node (`callgate turn --node-id ID "
            "--issue-relay-key PATH`)"
        )
    if len(parts) != 4 or parts[0] != RELAY_KEY_VERSION or not parts[1]:
        raise ConfigError(f"the relay key is not a {RELAY_KEY_VERSION}:ID:KEY:PUBLIC line")
    try:
        key = _unb64(parts[2])
        publics = [Ed25519PublicKey.from_public_bytes(_unb64(p)) for p in parts[3].split(",")]
    except (ValueError, binascii.Error):
        raise ConfigError("the relay key's key or public key is malformed") from None
    if len(key) != hashlib.sha256().digest_size:
        raise ConfigError("the relay key's key is not 32 bytes")
    if not 1 <= len(publics) <= MAX_ACCEPTED + 1:
        raise ConfigError("the relay key names too many node public keys")
    return parts[1], key, tuple(publics)


def derive(node_key: bytes, info: bytes) -> bytes:
    """The 32-byte key for one use (`info`) of the node key: HKDF-SHA256, RFC 5869."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(node_key)


def _signing_key(node_key: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(derive(node_key, _SIGNING))


def load_cluster_key(path: Path, *, setting: str = "cluster_key_file") -> bytes:
    """A key from `path`: a regular file, not a symbolic link, owned by the running
    user or root, mode 0600 or stricter, at least MIN_KEY_CHARS characters (surrounding
    whitespace ignored). The checks and the read use one descriptor, so the file cannot be
    swapped between them. ConfigError otherwise; the message never holds the key."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{setting} {path}: a symbolic link, refused") from None
        raise ConfigError(f"{setting} {path}: {exc.strerror}") from None
    try:
        _check_key_file(path, os.fstat(fd), setting)
        raw = _read_bounded(path, fd, setting)
    finally:
        os.close(fd)
    if len(raw) > MAX_KEY_BYTES:
        raise ConfigError(f"{setting} {path}: larger than {MAX_KEY_BYTES} bytes")
    key = raw.strip()
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"{setting} {path}: at least {MIN_KEY_CHARS} characters")
    return key


def _check_key_file(path: Path, info: os.stat_result, setting: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{setting} {path}: not a regular file")
    if info.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"{setting} {path}: owned by uid {info.st_uid}, must be this user's "
            f"(uid {os.geteuid()}) or root's"
        )
    if info.st_mode & 0o077:
        mode = info.st_mode & 0o777
        raise ConfigError(f"{setting} {path}: mode {mode:o}, must be 0600 or stricter")


def _read_bounded(path: Path, fd: int, setting: str) -> bytes:
    """At most MAX_KEY_BYTES + 1 bytes from `fd` (one more tells a file too large)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= MAX_KEY_BYTES:
            chunk = os.read(fd, MAX_KEY_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: {exc.strerror}") from None
    return b"".join(chunks)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
