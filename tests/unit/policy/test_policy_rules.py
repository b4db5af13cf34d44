"""Policy rule evaluation: ordering, defaults, parties, ethical walls, time windows across midnight
and time zones, constraints, explanations, validation, and the index agreeing with a full scan."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.policy.rules import (
    DEFAULT_RULE_ID,
    Decision,
    Party,
    Policy,
    Rule,
    Subject,
    TimeWindow,
    to_denial,
)
from callgate.types.decisions import Denial

ANYONE = Party()
FRI_NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday
ALICE = Subject("alice", ("legal",))
BOB = Subject("bob", ("trading",))
CAROL = Subject("carol", ("legal", "ops"))
DAVE = Subject("dave", ())
WEEKDAYS = frozenset(range(5))


def rule(rule_id: str, order: int, action: str = "allow", **kwargs: object) -> Rule:
    fields: dict[str, object] = {"caller": ANYONE, "callee": ANYONE, **kwargs}
    return Rule(id=rule_id, order=order, action=action, **fields)  # type: ignore[arg-type]


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ordering and default


def test_first_match_in_order_wins_not_list_position() -> None:
    policy = Policy([rule("late", 20, "allow"), rule("early", 10, "deny")])
    decision = policy.decide(ALICE, BOB, FRI_NOON)
    assert (decision.action, decision.rule_id) == ("deny", "early")
    assert [r.id for r in policy.ordered_rules] == ["early", "late"]


def test_equal_order_ties_broken_by_id() -> None:
    policy = Policy([rule("b", 5, "allow"), rule("a", 5, "deny"), rule("c", 5, "allow")])
    assert policy.decide(ALICE, BOB, FRI_NOON).rule_id == "a"


@pytest.mark.parametrize("default", ["allow", "deny"])
def test_default_action_when_nothing_matches(default: str) -> None:
    policy = Policy([rule("only-dave", 1, "deny", caller=Party(user="dave"))], default)  # type: ignore[arg-type]
    decision = policy.decide(ALICE, BOB, FRI_NOON)
    assert decision.action == default
    assert decision.rule_id is None
    assert decision.explanation[-1] == f"no rule matched: default action {default}"


def test_empty_policy_uses_default() -> None:
    assert Policy([]).decide(ALICE, BOB, FRI_NOON).action == "allow"
    assert Policy([], "deny").decide(ALICE, BOB, FRI_NOON).action == "deny"


# parties


def test_user_matching_on_each_side() -> None:
    policy = Policy([rule("a2b", 1, "deny", caller=Party(user="alice"), callee=Party(user="bob"))])
    assert policy.decide(ALICE, BOB, FRI_NOON).action == "deny"
    assert policy.decide(BOB, ALICE, FRI_NOON).action == "allow"  # not bidirectional
    assert policy.decide(CAROL, BOB, FRI_NOON).action == "allow"
    assert policy.decide(ALICE, CAROL, FRI_NOON).action == "allow"


def test_group_matching_and_user_within_group() -> None:
    policy = Policy(
        [
            rule("carol-legal", 1, "allow", caller=Party(user="carol", group="legal")),
            rule("legal-out", 2, "deny", caller=Party(group="legal")),
        ]
    )
    assert policy.decide(CAROL, DAVE, FRI_NOON).rule_id == "carol-legal"
    assert policy.decide(ALICE, DAVE, FRI_NOON).rule_id == "legal-out"
    assert policy.decide(BOB, DAVE, FRI_NOON).rule_id is None
    # carol outside legal no longer matches the user-in-group rule
    assert policy.decide(Subject("carol", ("ops",)), DAVE, FRI_NOON).rule_id is None


def test_callee_group_matching() -> None:
    policy = Policy([rule("no-ops", 1, "deny", callee=Party(group="ops"))])
    assert policy.decide(ALICE, CAROL, FRI_NOON).action == "deny"
    assert policy.decide(CAROL, ALICE, FRI_NOON).action == "allow"


def test_ethical_wall_is_one_bidirectional_rule() -> None:
    wall = rule(
        "wall",
        1,
        "deny",
        caller=Party(group="legal"),
        callee=Party(group="trading"),
        bidirectional=True,
        reason="ethical wall legal/trading",
    )
    policy = Policy([wall])
    assert policy.decide(ALICE, BOB, FRI_NOON).action == "deny"
    reverse = policy.decide(BOB, ALICE, FRI_NOON)
    assert (reverse.action, reverse.rule_id) == ("deny", "wall")
    assert "reverse direction" in reverse.explanation[-1]
    assert policy.decide(BOB, CAROL, FRI_NOON).action == "deny"  # carol is in legal too
    # everyone else is unaffected
    assert policy.decide(ALICE, CAROL, FRI_NOON).action == "allow"
    assert policy.decide(BOB, DAVE, FRI_NOON).action == "allow"
    assert policy.decide(DAVE, ALICE, FRI_NOON).action == "allow"
    assert policy.decide(BOB, Subject("eve", ("trading",)), FRI_NOON).action == "allow"


# time windows


def business_hours(zone: str = "UTC") -> Policy:
    window = TimeWindow(WEEKDAYS, time(9), time(17))
    return Policy([rule("hours", 1, "allow", when=window)], "deny", zone)


def test_window_inside_and_outside_bounds() -> None:
    policy = business_hours()
    assert policy.decide(ALICE, BOB, utc(2026, 11, 27, 9, 0)).action == "allow"  # start inclusive
    assert policy.decide(ALICE, BOB, utc(2026, 11, 27, 16, 59)).action == "allow"
    assert policy.decide(ALICE, BOB, utc(2026, 11, 27, 17, 0)).action == "deny"  # end exclusive
    assert policy.decide(ALICE, BOB, utc(2026, 11, 27, 8, 59)).action == "deny"


def test_window_days_of_week() -> None:
    policy = business_hours()
    assert policy.decide(ALICE, BOB, utc(2026, 11, 23, 12, 0)).action == "allow"  # Monday
    assert policy.decide(ALICE, BOB, utc(2026, 11, 28, 12, 0)).action == "deny"  # Saturday
    assert policy.decide(ALICE, BOB, utc(2026, 11, 29, 12, 0)).action == "deny"  # Sunday


def test_window_crossing_midnight_belongs_to_start_day() -> None:
    night = TimeWindow(frozenset({4}), time(22), time(6))  # Friday 22:00 - Saturday 06:00
    policy = Policy([rule("night", 1, "deny", when=night)])
    assert policy.decide(ALICE, BOB, utc(2026, 11, 28, 2, 0)).action == "deny"  # Sat 02:00
    assert policy.decide(ALICE, BOB, utc(2026, 11, 27, 2, 0)).action == "allow"  # Fri 02:00
    assert policy.decide(ALICE, BOB, utc(2026, 11, 27, 22, 0)).action == "deny"  # Fri 22:00
    assert policy.decide(ALICE, BOB, utc(2026, 11, 27, 23, 59)).action == "deny"
    assert policy.decide(ALICE, BOB, utc(2026, 11, 28, 6, 0)).action == "allow"  # end exclusive
    assert policy.decide(ALICE, BOB, utc(2026, 11, 28, 22, 30)).action == "allow"  # Sat night
    assert policy.decide(ALICE, BOB, utc(2026, 11, 27, 21, 59)).action == "allow"


def test_window_crossing_midnight_from_sunday_wraps_to_monday() -> None:
    night = TimeWindow(frozenset({6}), time(23), time(1))
    policy = Policy([rule("sun-night", 1, "deny", when=night)])
    assert policy.decide(ALICE, BOB, utc(2026, 11, 30, 0, 30)).action == "deny"  # Mon 00:30
    assert policy.decide(ALICE, BOB, utc(2026, 11, 24, 0, 30)).action == "allow"  # Tue 00:30


def test_window_with_equal_start_and_end_is_a_full_day() -> None:
    whole_saturday = TimeWindow(frozenset({5}), time(0), time(0))
    policy = Policy([rule("sat", 1, "deny", when=whole_saturday)])
    assert policy.decide(ALICE, BOB, utc(2026, 11, 28, 0, 0)).action == "deny"
    assert policy.decide(ALICE, BOB, utc(2026, 11, 28, 23, 59)).action == "deny"
    assert policy.decide(ALICE, BOB, utc(2026, 11, 29, 0, 0)).action == "allow"
    assert policy.decide(ALICE, BOB, utc(2026, 11, 27, 23, 59)).action == "allow"


def test_time_zone_conversion_across_berlin_dst_start() -> None:
    policy = business_hours("Europe/Berlin")
    # Friday 27 March 2026, CET (UTC+1): 07:30 UTC is 08:30 local, closed; 08:00 UTC is 09:00.
    assert policy.decide(ALICE, BOB, utc(2026, 3, 27, 7, 30)).action == "deny"
    assert policy.decide(ALICE, BOB, utc(2026, 3, 27, 8, 0)).action == "allow"
    # Monday 30 March 2026, CEST (UTC+2) since Sunday: 07:30 UTC is 09:30 local, open.
    assert policy.decide(ALICE, BOB, utc(2026, 3, 30, 7, 30)).action == "allow"
    assert policy.decide(ALICE, BOB, utc(2026, 3, 30, 15, 0)).action == "deny"  # 17:00 CEST
    assert policy.decide(ALICE, BOB, utc(2026, 3, 27, 15, 0)).action == "allow"  # 16:00 CET


def test_time_zone_conversion_at_the_dst_switch_instant() -> None:
    # Sunday 29 March 2026: 00:59 UTC is 01:59 CET; 01:00 UTC is 03:00 CEST (02:xx never exists).
    window = TimeWindow(frozenset({6}), time(2), time(3))
    policy = Policy([rule("gap", 1, "deny", when=window)], "allow", "Europe/Berlin")
    for minute in range(0, 120):
        at = utc(2026, 3, 29, 0, 0) + timedelta(minutes=minute)
        assert policy.decide(ALICE, BOB, at).action == "allow"
    after = Policy(
        [rule("morning", 1, "deny", when=TimeWindow(frozenset({6}), time(3), time(4)))],
        "allow",
        "Europe/Berlin",
    )
    assert after.decide(ALICE, BOB, utc(2026, 3, 29, 0, 59)).action == "allow"
    assert after.decide(ALICE, BOB, utc(2026, 3, 29, 1, 0)).action == "deny"


def test_non_utc_aware_input_is_converted() -> None:
    policy = business_hours("UTC")
    new_york = timezone(timedelta(hours=-5))
    # 04:30 in UTC-5 is 09:30 UTC
    assert policy.decide(ALICE, BOB, datetime(2026, 11, 27, 4, 30, tzinfo=new_york)).allowed


def test_naive_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be timezone-aware"):
        business_hours().decide(ALICE, BOB, datetime(2026, 11, 27, 12, 0))


# constraints and denial


def test_constraints_carried_by_allow_rule() -> None:
    policy = Policy(
        [
            rule(
                "guarded",
                1,
                "allow",
                caller=Party(group="legal"),
                relay_only=True,
                max_duration_s=600,
                recording_required=True,
                reason="legal calls are recorded",
            )
        ]
    )
    decision = policy.decide(ALICE, BOB, FRI_NOON)
    assert decision == Decision(
        action="allow",
        rule_id="guarded",
        relay_only=True,
        max_duration_s=600,
        recording_required=True,
        reason="legal calls are recorded",
        explanation=decision.explanation,
    )
    assert "(relay only, max 600 s, recording required)" in decision.explanation[-1]
    assert to_denial(decision) is None
    plain = policy.decide(BOB, ALICE, FRI_NOON)
    assert (plain.relay_only, plain.max_duration_s, plain.recording_required) == (
        False,
        None,
        False,
    )


def test_to_denial_names_rule_and_reason() -> None:
    policy = Policy([rule("wall", 1, "deny", caller=Party(user="alice"), reason="ethical wall")])
    assert to_denial(policy.decide(ALICE, BOB, FRI_NOON)) == Denial("wall", "ethical wall")
    unnamed = Policy([rule("x", 1, "deny")]).decide(ALICE, BOB, FRI_NOON)
    assert to_denial(unnamed) == Denial("x", "denied by policy")
    default = Policy([], "deny").decide(ALICE, BOB, FRI_NOON)
    assert to_denial(default) == Denial(DEFAULT_RULE_ID, "denied by default policy")


# explanation


def test_explanation_lists_each_examined_rule_then_the_match() -> None:
    night = TimeWindow(frozenset({4}), time(22), time(6))
    policy = Policy(
        [
            rule("r1", 1, "deny", caller=ANYONE, callee=Party(user="carol")),
            rule("r2", 2, "deny", caller=ANYONE, callee=Party(group="ops")),
            rule("r3", 3, "deny", when=night),
            rule("r4", 4, "allow", callee=Party(group="trading"), max_duration_s=60),
            rule("r5", 5, "deny"),
        ],
        timezone="Europe/Berlin",
    )
    decision = policy.explain(ALICE, BOB, FRI_NOON)
    assert decision.explanation == [
        "rule r1 (order 1) [anyone -> user carol]: no match, callee bob is not user carol",
        "rule r2 (order 2) [anyone -> group ops]: no match, callee bob is not in group ops",
        "rule r3 (order 3): no match, Fri 2026-11-27 13:00 Europe/Berlin is outside "
        "Fri 22:00-06:00 next day",
        "rule r4 (order 4): matches, caller alice is anyone, callee bob is group trading "
        "-> allow (max 60 s)",
    ]


def test_explanation_of_caller_mismatch_window_match_and_wall() -> None:
    policy = Policy(
        [
            rule("dave-only", 1, "deny", caller=Party(user="dave")),
            rule(
                "wall",
                2,
                "deny",
                caller=Party(group="legal"),
                callee=Party(group="trading"),
                bidirectional=True,
            ),
            rule("hours", 3, "allow", when=TimeWindow(WEEKDAYS, time(9), time(17))),
        ]
    )
    decision = policy.explain(CAROL, ALICE, FRI_NOON)
    assert decision.explanation[0] == (
        "rule dave-only (order 1) [user dave -> anyone]: no match, caller carol is not user dave"
    )
    assert decision.explanation[1] == (
        "rule wall (order 2) [group legal <-> group trading]: no match, neither direction: "
        "callee alice is not in group trading; reversed, caller carol is not in group trading"
    )
    assert decision.explanation[2] == (
        "rule hours (order 3): matches, caller carol is anyone, callee alice is anyone, "
        "Fri 2026-11-27 12:00 UTC is within Mon,Tue,Wed,Thu,Fri 09:00-17:00 -> allow"
    )


def test_decide_summarises_rules_the_index_skipped() -> None:
    policy = Policy([rule(f"u{i}", i, "deny", caller=Party(user=f"user{i}")) for i in range(10)])
    decision = policy.decide(Subject("user7"), BOB, FRI_NOON)
    assert decision.rule_id == "u7"
    assert decision.explanation[0].startswith("9 rule(s) not examined")
    assert len(decision.explanation) == 2
    full = policy.explain(Subject("user7"), BOB, FRI_NOON)
    assert full.rule_id == "u7"
    assert len(full.explanation) == 8
    quiet = policy.decide(Subject("user7"), BOB, FRI_NOON, explain=False)
    assert (quiet.action, quiet.rule_id, quiet.explanation) == ("deny", "u7", [])


# validation


def test_duplicate_rule_ids_rejected() -> None:
    with pytest.raises(ValueError, match=r"duplicate rule id 'a' \(rules at positions 0 and 2\)"):
        Policy([rule("a", 1), rule("b", 2), rule("a", 3)])


def test_unknown_time_zone_rejected() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Policy([], timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="unknown time zone"):
        Policy([], timezone="../etc/passwd")


@pytest.mark.parametrize("seconds", [0, -5])
def test_non_positive_max_duration_rejected(seconds: int) -> None:
    with pytest.raises(
        ValueError, match=f"rule 'r': max_duration_s must be positive, got {seconds}"
    ):
        rule("r", 1, "allow", max_duration_s=seconds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "maybe"}, "action must be 'allow' or 'deny', got 'maybe'"),
        ({"action": "deny", "relay_only": True}, "only apply to allow rules"),
        ({"rule_id": ""}, "must be non-empty"),
        ({"rule_id": DEFAULT_RULE_ID}, "reserved for the default action"),
    ],
)
def test_invalid_rules_rejected(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"rule_id": "r", "order": 1, "action": "allow", **kwargs}
    with pytest.raises(ValueError, match=message):
        rule(**args)  # type: ignore[arg-type]


def test_invalid_windows_parties_and_default_rejected() -> None:
    with pytest.raises(ValueError, match="days must not be empty"):
        TimeWindow(frozenset(), time(9), time(17))
    with pytest.raises(ValueError, match=r"days must be 0 \(Mon\) .. 6 \(Sun\), got \[7\]"):
        TimeWindow(frozenset({1, 7}), time(9), time(17))
    with pytest.raises(ValueError, match="must be naive"):
        TimeWindow(WEEKDAYS, time(9, tzinfo=UTC), time(17))
    with pytest.raises(ValueError, match="non-empty"):
        Party(group="")
    with pytest.raises(ValueError, match="default_action must be 'allow' or 'deny'"):
        Policy([], "block")  # type: ignore[arg-type]


# properties

handles = st.sampled_from(["alice", "bob", "carol", "dave", "eve"])
groups = st.lists(st.sampled_from(["legal", "trading", "ops"]), max_size=3, unique=True)
subjects = st.builds(Subject, handles, groups.map(tuple))
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=200)
@given(caller=subjects, callee=subjects, at=instants)
def test_allow_all_allows_everything(caller: Subject, callee: Subject, at: datetime) -> None:
    policy = Policy([rule("all", 100, "allow")], "deny", "Europe/Berlin")
    decision = policy.decide(caller, callee, at)
    assert (decision.action, decision.rule_id) == ("allow", "all")


@settings(max_examples=200)
@given(a=handles, b=handles, caller=subjects, callee=subjects, at=instants)
def test_deny_pair_before_allow_all_denies_exactly_that_pair(
    a: str, b: str, caller: Subject, callee: Subject, at: datetime
) -> None:
    pair = rule("pair", 1, "deny", caller=Party(user=a), callee=Party(user=b))
    policy = Policy([rule("all", 100, "allow"), pair], "deny")
    decision = policy.decide(caller, callee, at)
    expected = "deny" if (caller.handle, callee.handle) == (a, b) else "allow"
    assert decision.action == expected


parties = st.builds(
    Party,
    st.none() | handles,
    st.none() | st.sampled_from(["legal", "trading", "ops"]),
)
windows = st.none() | st.builds(
    TimeWindow,
    st.frozensets(st.integers(0, 6), min_size=1),
    st.times(),
    st.times(),
)
random_rules = st.lists(
    st.builds(
        Rule,
        id=st.text("abcdefgh", min_size=1, max_size=4),
        order=st.integers(0, 5),
        caller=parties,
        callee=parties,
        action=st.sampled_from(["allow", "deny"]),
        when=windows,
        bidirectional=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda r: r.id,
)


@settings(max_examples=300)
@given(
    rules=random_rules,
    default=st.sampled_from(["allow", "deny"]),
    caller=subjects,
    callee=subjects,
    at=instants,
)
def test_indexed_decide_agrees_with_full_scan(
    rules: list[Rule], default: str, caller: Subject, callee: Subject, at: datetime
) -> None:
    policy = Policy(rules, default, "America/New_York")  # type: ignore[arg-type]
    fast = policy.decide(caller, callee, at)
    full = policy.explain(caller, callee, at)
    quiet = policy.decide(caller, callee, at, explain=False)
    assert (fast.action, fast.rule_id) == (full.action, full.rule_id)
    assert fast.explanation[-1] == full.explanation[-1]
    assert quiet == Decision(
        fast.action,
        fast.rule_id,
        fast.relay_only,
        fast.max_duration_s,
        fast.recording_required,
        fast.reason,
        [],
    )
