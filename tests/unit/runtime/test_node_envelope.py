"""Messages between nodes (runtime/node_envelope.py): only those sealed with the node key for this
very node, fresh and never seen before reach the hub; the rest are counted by reason."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from callgate.metrics import ClusterRefusalCollector
from callgate.runtime.cluster_keys import ClusterKeys, parse_relay_key
from callgate.runtime.cluster_seal import SKEW, ClusterSeal
from callgate.runtime.node_envelope import MAX_AGE, WINDOW, NodeEnvelope, ReplayWindow

KEY = b"node-key-0123456789abcdef0123456789abcdef"
END = {"op": "end", "call": "c1", "admin": "root"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def nodes(clock: Clock | None = None) -> tuple[NodeEnvelope, NodeEnvelope]:
    """Node a (sender) and node b (receiver), on one clock."""
    clock = clock or Clock()
    a = NodeEnvelope(ClusterSeal(KEY, wall=clock), "a")
    b = NodeEnvelope(ClusterSeal(KEY, wall=clock), "b")
    return a, b


def test_a_message_reaches_its_node_once() -> None:
    a, b = nodes()
    raw = a.wrap("b", END)
    assert b.unwrap(raw.encode()) == ("a", END)
    assert b.unwrap(raw) is None  # replayed
    assert b.seal.refusals == {("msg", "replayed"): 1}
    assert a.unwrap(a.wrap("b", END)) is None  # for b, not a
    assert a.seal.refusals == {("msg", "forged"): 1}


def test_forged_tampered_unsigned_and_malformed_messages_are_refused() -> None:
    a, b = nodes()
    forger = NodeEnvelope(ClusterSeal(b"not-the-cluster-key-0123456789abcdef!"), "a")
    version, mac, body = a.wrap("b", END).split(".", 2)
    tampered = f"{version}.{mac}.{body.replace('root', 'eve!')}"
    bad_fields = [
        {"from": "a", "boot": "x", "seq": -1, "msg": END},
        {"from": "a", "boot": "x", "seq": True, "msg": END},
        {"from": "", "boot": "x", "seq": 1, "msg": END},
        {"from": "a", "boot": "x" * 65, "seq": 1, "msg": END},
        {"from": "a", "boot": "x", "seq": 1, "msg": [END]},
        ["not", "an", "object"],
    ]
    for raw in [forger.wrap("b", END), tampered, json.dumps(END), b"\xff\xfe", "cg1..{}"]:
        assert b.unwrap(raw) is None
    assert b.unwrap(a.wrap("b", {"op": "lost", "calls": ["c" * 40] * 30_000})) is None
    for data in bad_fields:  # sealed with the right key, but not an envelope
        assert b.unwrap(a.seal.seal("msg", "b", data)) is None
    assert b.seal.refusals == {
        ("msg", "forged"): 2,
        ("msg", "unsigned"): 3,
        ("msg", "malformed"): len(bad_fields),
        ("msg", "oversized"): 1,
    }


def test_a_relay_cannot_speak_as_a_node() -> None:
    """A relay holds its own key only: it cannot seal a node message, and one sealed with its
    key in the node key's place is refused as forged."""
    _, b = nodes()
    eu1 = ClusterKeys.for_relay(*parse_relay_key(b.seal.keys.relay_key_line("eu1")))
    with pytest.raises(PermissionError):
        NodeEnvelope(ClusterSeal(eu1), "eu1").wrap("b", END)
    relay_key = b.seal.keys.relay_key("eu1")
    assert relay_key is not None
    posing = NodeEnvelope(ClusterSeal(ClusterKeys.for_node(relay_key)), "a")
    assert b.unwrap(posing.wrap("b", END)) is None
    assert b.seal.refusals == {("msg", "forged"): 1}


def test_stale_and_future_messages_are_refused() -> None:
    clock = Clock()
    a, b = nodes(clock)
    late, early = a.wrap("b", END), a.wrap("b", END)
    clock.now += MAX_AGE + 0.1
    assert b.unwrap(late) is None
    clock.now -= MAX_AGE + 0.1 + SKEW + 0.1
    assert b.unwrap(early) is None
    assert b.seal.refusals == {("msg", "stale"): 2}


def test_messages_out_of_order_pass_once_each() -> None:
    a, b = nodes()
    sent = [a.wrap("b", {"op": "gone", "device": str(n)}) for n in range(5)]
    for raw in [sent[3], sent[0], sent[4], sent[2], sent[1]]:
        assert b.unwrap(raw) is not None
    assert all(b.unwrap(raw) is None for raw in sent)
    assert b.seal.refusals == {("msg", "replayed"): 5}


def test_a_restarted_sender_is_a_new_life_and_old_lives_are_forgotten() -> None:
    clock = Clock()
    a, b = nodes(clock)
    first = a.wrap("b", END)
    assert b.unwrap(first) is not None
    again = NodeEnvelope(ClusterSeal(KEY, wall=clock), "a")
    assert b.unwrap(again.wrap("b", END)) is not None  # seq 0 again, another boot
    clock.now += MAX_AGE + SKEW + 1
    assert b.unwrap(a.wrap("b", END)) is not None
    assert len(b._seen) == 1  # the silent lives were dropped (their messages are stale now)
    assert b.unwrap(first) is None  # and the first message is stale, not new
    assert b.seal.refusals == {("msg", "stale"): 1}


def test_a_restarted_receiver_refuses_what_was_sent_to_its_previous_life() -> None:
    """Its replay windows died with it: a message captured on its way to the previous life,
    still fresh, is refused as `before-start`; what is sent to the new life passes."""
    clock = Clock()
    a, b = nodes(clock)
    captured = a.wrap("b", END)
    assert b.unwrap(captured) is not None
    clock.now += 1
    restarted = NodeEnvelope(ClusterSeal(KEY, wall=clock), "b")
    assert restarted.unwrap(captured) is None
    assert restarted.unwrap(a.wrap("b", END)) is not None
    assert restarted.seal.refusals == {("msg", "before-start"): 1}


def test_a_clock_stepped_back_makes_no_old_message_fresh_again() -> None:
    """Ages are judged by the latest time the receiver saw, and a sender's window is forgotten
    by its messages' own times: after 30 s (a's window forgotten, its messages stale) the
    receiver's clock goes back 30 s; a's message replayed then is still stale."""
    clock = Clock()
    a, b = nodes(clock)
    c = NodeEnvelope(ClusterSeal(KEY, wall=clock), "c")
    captured = a.wrap("b", END)
    assert b.unwrap(captured) is not None
    clock.now += 30
    assert b.unwrap(c.wrap("b", END)) is not None
    assert len(b._seen) == 1  # a's life forgotten: its messages are all stale
    clock.now -= 30
    assert b.unwrap(captured) is None
    assert b.seal.refusals == {("msg", "stale"): 1}
    clock.now += 30 + 1  # caught up: messages flow again
    assert b.unwrap(a.wrap("b", END)) is not None


def test_the_replay_window_refuses_numbers_below_it() -> None:
    window = ReplayWindow()
    assert window.first_time(10)
    assert window.first_time(10 + WINDOW - 1)
    assert window.first_time(11)  # still inside the window
    assert not window.first_time(10 + WINDOW - 1)
    assert window.first_time(10**12)  # a jump clears the window without a huge shift
    assert not window.first_time(10**12 - WINDOW)
    assert window.first_time(10**12 - WINDOW + 1)


def test_refusals_are_logged_rarely_and_exported(caplog: pytest.LogCaptureFixture) -> None:
    a, b = nodes()
    raw = a.wrap("b", END)
    b.unwrap(raw)
    with caplog.at_level(logging.WARNING, "callgate.runtime.cluster_seal"):
        for _ in range(20):
            b.unwrap(raw)
    assert len(caplog.records) == 1 and "replayed" in caplog.records[0].getMessage()
    assert "root" not in caplog.text and KEY.decode() not in caplog.text
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterRefusalCollector(lambda: dict(b.seal.refusals)))
    text = generate_latest(registry).decode()
    assert 'callgate_cluster_refused_total{kind="msg",reason="replayed"} 20.0' in text
