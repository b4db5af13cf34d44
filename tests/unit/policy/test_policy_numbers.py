"""Policy rules for calls with the phone network: direction and number patterns (docs/sip.md,
"Policy for numbers")."""

from __future__ import annotations

import datetime as dt

import pytest

from callgate.policy.errors import InvalidPolicyValue
from callgate.policy.rules import Party, Policy, Rule, Subject, TimeWindow, call_direction
from callgate.policy.specs import RuleSpec

MONDAY_NOON = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
ALICE = Subject("alice", ("traders",))
BOB = Subject("bob", ())
UK = Subject("+442079460000")
PREMIUM = Subject("+449098790000")
HIDDEN = Subject("anonymous@carrier")


def test_direction_of_a_call_follows_which_party_is_a_number() -> None:
    assert call_direction(ALICE, BOB) == "internal"
    assert call_direction(ALICE, UK) == "outbound"
    assert call_direction(UK, BOB) == "inbound"
    assert call_direction(HIDDEN, BOB) == "inbound"


def test_prefixes_directions_and_windows_decide_dial_out() -> None:
    rules = [
        Rule("premium", 1, Party(), Party(number="+44909"), "deny", reason="premium rate"),
        Rule("traders-uk", 2, Party(group="traders"), Party(number="+44"), "allow",
             when=TimeWindow(frozenset(range(5)), dt.time(8), dt.time(18)), max_duration_s=600),
        Rule("screen", 3, Party(number="anonymous"), Party(), "deny", direction="inbound"),
        Rule("anyone", 4, Party(), Party(), "allow"),
    ]  # fmt: skip
    policy = Policy(rules)
    denied = policy.decide(ALICE, PREMIUM, MONDAY_NOON)
    assert (denied.action, denied.rule_id, denied.reason) == ("deny", "premium", "premium rate")
    allowed = policy.decide(ALICE, UK, MONDAY_NOON)
    assert allowed.rule_id == "traders-uk" and allowed.dial_out and allowed.max_duration_s == 600
    # outside the window, or not a trader: only the generic rule, which does not permit dialling
    at_night = policy.decide(ALICE, UK, MONDAY_NOON.replace(hour=22))
    assert at_night.rule_id == "anyone" and not at_night.dial_out
    assert not policy.decide(BOB, UK, MONDAY_NOON).dial_out
    # inbound screening: a caller without a number is refused; one with a number is not
    assert policy.decide(HIDDEN, BOB, MONDAY_NOON).rule_id == "screen"
    assert policy.decide(UK, BOB, MONDAY_NOON).rule_id == "anyone"
    # a number pattern never matches a user, and a direction never the other kind of call
    assert not Party(number="+").matches(ALICE) and Party(number="+").matches(UK)
    outbound_only = Policy([Rule("out", 1, Party(), Party(), "deny", direction="outbound")])
    assert outbound_only.decide(ALICE, BOB, MONDAY_NOON).allowed
    assert not outbound_only.decide(ALICE, UK, MONDAY_NOON).allowed
    lines = outbound_only.explain(ALICE, BOB, MONDAY_NOON).explanation
    assert lines[0].endswith("no match, the call is internal, not outbound")


def test_rule_specs_take_numbers_and_direction_and_refuse_bad_ones() -> None:
    spec = RuleSpec.parse({"name": "uk", "action": "allow", "direction": "outbound",
                           "caller": {"group": "traders"}, "callee": {"number": "+44"}})  # fmt: skip
    assert spec.as_json()["callee"]["number"] == "+44" and spec.direction == "outbound"
    view_rule = Rule("x", 1, Party(), Party(number=spec.callee_number), "allow")
    assert view_rule.dial_out
    for bad in (
        {"callee": {"number": "44"}},
        {"callee": {"number": "anonymous"}},  # only callers hide their number
        {"caller": {"number": "+44", "user": "bob"}},
        {"direction": "sideways"},
    ):
        with pytest.raises(InvalidPolicyValue):
            RuleSpec.parse({"name": "bad", "action": "deny", **bad})
