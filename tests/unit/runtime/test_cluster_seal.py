"""Entries nodes and relays write to Redis for each other are sealed (runtime/cluster_seal.py):
only the cluster key's holders can write one that is believed, for one kind and subject, while
it is fresh."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from callgate.config import Settings
from callgate.errors import ConfigError
from callgate.runtime.cluster_keys import (
    MAX_KEY_BYTES,
    ClusterKeys,
    load_cluster_key,
    parse_relay_key,
)
from callgate.runtime.cluster_seal import (
    MAX_ENTRY_BYTES,
    SKEW,
    ClusterSeal,
    issue_relay_key,
    node_seal,
    relay_seal,
)

KEY = b"0123456789abcdef0123456789abcdef-cluster"
DATA = {"id": "eu1", "load": 3}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_sealed_entry_opens_for_its_kind_and_subject_only() -> None:
    seal = ClusterSeal(KEY)
    raw = seal.seal("relay", "eu1", DATA)
    assert seal.open("relay", "eu1", raw.encode(), 15) == DATA
    assert seal.open("relay", "us1", raw, 15) is None  # moved to another relay's key
    assert seal.open("snap", "eu1", raw, 15) is None  # read as another kind
    assert seal.refused == 2


def test_forged_tampered_and_unsigned_entries_are_ignored() -> None:
    seal = ClusterSeal(KEY)
    other = ClusterSeal(b"another-cluster-key-of-32-characters!!")
    raw = seal.seal("relay", "eu1", DATA)
    version, mac, body = raw.split(".", 2)
    tampered = f"{version}.{mac}.{body.replace('3', '0')}"
    assert seal.open("relay", "eu1", tampered, 15) is None
    assert seal.open("relay", "eu1", other.seal("relay", "eu1", DATA), 15) is None
    assert seal.open("relay", "eu1", json.dumps(DATA), 15) is None  # as written before sealing
    assert seal.open("relay", "eu1", f"cg1..{body}", 15) is None
    assert seal.open("relay", "eu1", b"\xff\xfe", 15) is None
    assert seal.refused == 5


def test_stale_and_future_entries_are_ignored() -> None:
    clock = Clock()
    seal = ClusterSeal(KEY, wall=clock)
    raw = seal.seal("pair", "", {"pair": ["alice", "bob"]})
    clock.now += 15
    assert seal.open("pair", "", raw, 15) == {"pair": ["alice", "bob"]}
    clock.now += 0.1
    assert seal.open("pair", "", raw, 15) is None  # replayed too late
    clock.now -= 15.1 + SKEW + 0.1
    assert seal.open("pair", "", raw, 15) is None  # from too far in the future


def test_refusals_are_logged_once_a_minute_per_kind_without_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seal = ClusterSeal(KEY)
    with caplog.at_level(logging.WARNING, "callgate.runtime.cluster_seal"):
        for _ in range(50):
            seal.open("relay", "evil", '{"id": "evil", "udp": "secret-looking"}', 15)
        seal.open("snap", "n9", "cg1.00.{}", 15)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and seal.refused == 51
    assert "the relay entry 'evil' in Redis: unsigned" in warnings[0]
    assert "the snap entry 'n9' in Redis: forged" in warnings[1]
    assert not any("secret-looking" in w or KEY.decode() in w for w in warnings)


def test_the_key_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    path.write_text("  " + "k" * 32 + "\n")
    path.chmod(0o600)
    assert load_cluster_key(path) == b"k" * 32
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="mode 640, must be 0600"):
        load_cluster_key(path)
    path.chmod(0o400)  # stricter is fine
    assert load_cluster_key(path) == b"k" * 32
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="at least 32 characters") as caught:
        load_cluster_key(path)
    assert "short" not in str(caught.value)
    with pytest.raises(ConfigError, match="No such file"):
        load_cluster_key(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_cluster_key(tmp_path)


def test_the_key_file_is_not_followed_through_a_link_nor_taken_from_another_user(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real.key"
    real.write_text("k" * 40)
    real.chmod(0o600)
    link = tmp_path / "cluster.key"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="a symbolic link, refused"):
        load_cluster_key(link)
    big = tmp_path / "big.key"
    big.write_bytes(b"k" * (MAX_KEY_BYTES + 1))
    big.chmod(0o600)
    with pytest.raises(ConfigError, match="larger than"):
        load_cluster_key(big)
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    os.chown(real, 65534, 65534)  # nobody's file, mode 0600
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        load_cluster_key(real)
    os.chown(real, 0, 0)  # root's is accepted
    assert load_cluster_key(real) == b"k" * 40


def relay_of(node: ClusterKeys, relay_id: str) -> ClusterSeal:
    """The seal of a relay holding only the key file a node issued it."""
    return ClusterSeal(ClusterKeys.for_relay(*parse_relay_key(node.relay_key_line(relay_id))))


def test_a_relay_speaks_for_itself_only() -> None:
    """A relay's key signs its own registration and its own drain request, which nodes
    believe; it reads what nodes sign for relays; it can sign nothing else of a node's, nor
    another relay's registration or drain request."""
    node = ClusterSeal(KEY)
    relay = relay_of(node.keys, "eu1")
    assert node.open("relay", "eu1", relay.seal("relay", "eu1", DATA), 15) == DATA
    assert relay.open("drain", "eu1", relay.seal("drain", "eu1", DATA), 15) == DATA
    assert node.open("drain", "eu1", relay.seal("drain", "eu1", DATA), 15) == DATA
    for kind in ["snap", "pair", "drain"]:
        assert relay.open(kind, "eu1", node.seal(kind, "eu1", DATA), 15) == DATA
    for kind, subject in [("msg", "n1"), ("dev", "x"), ("snap", "eu1"), ("pair", ""),
                          ("drain", "us1"), ("relay", "us1")]:  # fmt: skip
        with pytest.raises(PermissionError):
            relay.seal(kind, subject, DATA)
    assert relay.open("relay", "us1", node.seal("relay", "us1", DATA), 15) is None
    assert relay.open("msg", "n1", node.seal("msg", "n1", DATA), 15) is None
    us1 = relay_of(node.keys, "us1")  # eu1's drain request moved to us1: not us1's
    assert us1.open("drain", "us1", relay.seal("drain", "eu1", DATA), 15) is None
    assert node.refused == 0 and relay.refused == 2 and us1.refused == 1


def test_what_a_relay_signs_as_a_node_is_refused() -> None:
    """A relay that uses its key as if it were the node key (HMAC for every kind, or a
    signature of its own) convinces neither nodes nor other relays."""
    node = ClusterSeal(KEY)
    eu1 = node.keys.relay_key("eu1")
    assert eu1 is not None
    posing = ClusterSeal(ClusterKeys.for_node(eu1))  # the relay's key in a node's place
    other_relay = relay_of(node.keys, "us1")
    for kind in ["msg", "dev", "snap", "pair", "drain"]:
        assert node.open(kind, "n1", posing.seal(kind, "n1", DATA), 15) is None
    for kind in ["snap", "pair", "drain"]:
        assert other_relay.open(kind, "us1", posing.seal(kind, "us1", DATA), 15) is None
    assert node.open("relay", "us1", posing.seal("relay", "us1", DATA), 15) is None
    assert node.refusals == {(k, "forged"): 1 for k in ["msg", "dev", "snap", "pair", "drain",
                                                         "relay"]}  # fmt: skip


def test_relay_keys_are_issued_private_and_parsed_strictly(tmp_path: Path) -> None:
    key_file = tmp_path / "cluster.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    settings = Settings(cluster_key_file=key_file, node_id="eu1")
    path = tmp_path / "relay-eu1.key"
    issue_relay_key(settings, "eu1", path)
    assert path.stat().st_mode & 0o777 == 0o600
    relay_id, key, _public = parse_relay_key(path.read_text())
    assert (relay_id, key) == ("eu1", ClusterSeal(KEY).keys.relay_key("eu1"))
    assert KEY.decode() not in path.read_text()
    with pytest.raises(ConfigError, match="exists: not overwritten"):
        issue_relay_key(settings, "eu1", path)
    secret = path.read_text().split(":")[2]
    for bad in ["", "cgr2:eu1", path.read_text().replace("cgr2", "cgr9"),
                path.read_text().replace(secret, secret[:-4])]:  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            parse_relay_key(bad)
        assert secret not in str(caught.value)


def test_the_node_key_comes_from_a_file_or_the_environment_not_both(tmp_path: Path) -> None:
    key_file = tmp_path / "cluster.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    from_env = node_seal(Settings(cluster_key=KEY.decode()))
    from_file = node_seal(Settings(cluster_key_file=key_file))
    assert from_env.open("msg", "n", from_file.seal("msg", "n", DATA), 15) == DATA
    with pytest.raises(ConfigError, match="both set"):
        node_seal(Settings(cluster_key_file=key_file, cluster_key=KEY.decode()))
    with pytest.raises(ConfigError, match="at least 32 characters"):
        node_seal(Settings(cluster_key="short"))
    with pytest.raises(ConfigError, match="needs cluster_key_file"):
        node_seal(Settings())
    with pytest.raises(ConfigError, match="the node key itself"):
        node_seal(Settings(cluster_key=KEY.decode(), cluster_key_accepted=KEY.decode()))
    changing = node_seal(Settings(cluster_key="n" * 40, cluster_key_accepted=KEY.decode()))
    assert changing.open("msg", "n", from_file.seal("msg", "n", DATA), 15) == DATA
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 644"):
        node_seal(Settings(cluster_key_file=key_file))


def test_the_node_key_changes_without_a_gap() -> None:
    """docs/scaling.md, "Changing the node key": sign old and accept new everywhere, then sign
    new and accept old, then new alone; relays re-issued at each step. At every step, each
    node and relay believes the others, and an entry under the retired key is refused at the
    end."""
    old, new = KEY, b"the-next-node-key-0123456789abcdefghij"
    step0, step1 = ClusterSeal(old), ClusterSeal(ClusterKeys.for_node(old, new))
    step2, step3 = ClusterSeal(ClusterKeys.for_node(new, old)), ClusterSeal(new)
    relay1 = relay_of(step1.keys, "eu1")  # issued during step 1: old relay key, both publics
    relay2 = relay_of(step2.keys, "eu1")  # issued during step 2: new relay key, both publics
    relay3 = relay_of(step3.keys, "eu1")

    def believes(reader: ClusterSeal, writer: ClusterSeal, kind: str) -> bool:
        return reader.open(kind, "eu1", writer.seal(kind, "eu1", DATA), 15) == DATA

    for a, b in [(step0, step1), (step1, step2), (step2, step3)]:  # neighbours in a rolling restart
        for kind in ["msg", "dev", "snap", "relay"]:
            assert believes(a, b, kind) and believes(b, a, kind), kind
    for node in [step1, step2]:
        assert believes(node, relay1, "relay") and believes(relay1, node, "snap")
    for node in [step2, step3]:
        assert believes(node, relay2, "relay") and believes(relay2, node, "pair")
    assert believes(step3, relay3, "relay") and believes(relay3, step3, "drain")
    assert not believes(step3, step0, "msg") and not believes(relay3, step0, "snap")
    assert not believes(step3, relay1, "relay")  # a relay not re-issued is left out at the end


def test_only_lowercase_hex_signatures_of_their_exact_length_are_accepted() -> None:
    """What `seal` writes, nothing else: the same MAC or signature in upper case, with spaces
    around it or cut short is refused as forged."""
    seal = ClusterSeal(KEY)
    for kind in ["relay", "snap"]:  # an HMAC (64 hex digits), an Ed25519 signature (128)
        raw = seal.seal(kind, "eu1", DATA)
        version, mac, body = raw.split(".", 2)
        assert seal.open(kind, "eu1", raw, 15) == DATA
        for variant in [mac.upper(), f" {mac}", f"{mac}\n", mac[:-2]]:
            assert seal.open(kind, "eu1", f"{version}.{variant}.{body}", 15) is None
    assert seal.refusals == {("relay", "forged"): 4, ("snap", "forged"): 4}


def test_entries_larger_than_their_kind_allows_are_refused_before_their_mac() -> None:
    seal = ClusterSeal(KEY)
    for kind in ["relay", "drain", "pair", "dev"]:
        big = seal.seal(kind, "eu1", {"padding": "x" * MAX_ENTRY_BYTES})  # genuinely sealed
        assert seal.open(kind, "eu1", big, 15) is None
        assert seal.refusals[kind, "oversized"] == 1
    snapshot = seal.seal("snap", "a", {"padding": "x" * MAX_ENTRY_BYTES})  # a busy node's
    assert seal.open("snap", "a", snapshot, 15) == {"padding": "x" * MAX_ENTRY_BYTES}


def test_every_start_warns_while_a_key_change_is_unfinished(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node that still accepts a second key, and a relay whose key still names two node
    public keys, say so at each start (the old key signs as long as they do); a node or relay
    on one key says nothing."""
    new = "the-next-node-key-0123456789abcdefghij"
    caplog.set_level(logging.WARNING, "callgate.runtime.cluster_seal")
    node_seal(Settings(cluster_key=KEY.decode()))
    single = ClusterKeys.for_node(KEY).relay_key_line("eu1")
    relay_seal(Settings(node_id="eu1", relay_key=single))
    assert caplog.records == []
    node_seal(Settings(cluster_key=new, cluster_key_accepted=KEY.decode()))
    both = ClusterKeys.for_node(new.encode(), KEY).relay_key_line("eu1")
    relay_seal(Settings(node_id="eu1", relay_key=both))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "cluster_key_accepted is set" in warnings[0] and "step 3" in warnings[0]
    assert "names 2 node public keys" in warnings[1] and "re-issue" in warnings[1]
    assert KEY.decode() not in " ".join(warnings) and new not in " ".join(warnings)


def test_every_key_is_derived_with_hkdf_and_the_node_key_signs_nothing_itself(
    tmp_path: Path,
) -> None:
    """RFC 5869, one `info` label per use: the node MAC key, the signing key's seed and each
    relay's key are distinct, none is the node key, and an entry MACed with the raw node key
    (as before) is refused; a relay key issued before (cgr1) is refused with what to do."""
    keys = ClusterKeys.for_node(KEY)

    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(KEY)

    assert keys.macs == (hkdf(b"callgate node mac key v2"),)
    assert keys.relay_key("eu1") == hkdf(b"callgate relay key v2|eu1")
    seed = Ed25519PrivateKey.from_private_bytes(hkdf(b"callgate node signing key v2"))
    assert keys.publics[0].public_bytes_raw() == seed.public_key().public_bytes_raw()
    derived = {keys.macs[0], keys.relay_key("eu1"), keys.relay_key("eu2"), KEY}
    assert len(derived) == 4
    seal = ClusterSeal(keys)
    body = seal.seal("msg", "n", DATA).split(".", 2)[2]
    raw_mac = hmac.new(KEY, f"3:msg|1:n|{body}".encode(), hashlib.sha256).hexdigest()
    assert seal.open("msg", "n", f"cg1.{raw_mac}.{body}", 15) is None
    assert seal.refusals == {("msg", "forged"): 1}
    old = keys.relay_key_line("eu1").replace("cgr2", "cgr1")
    with pytest.raises(ConfigError, match=r"cgr1 key.*issue a new one"):
        parse_relay_key(old)
