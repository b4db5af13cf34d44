"""The policy store: positions stay 1..n, changes and their audit entries commit together, the
cached policy is reused until the stored version moves (another process's change included),
groups keep accounts' membership consistent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from callgate.accounts.service import AccountService
from callgate.clock import ManualClock
from callgate.policy.errors import InvalidPolicyValue, PolicyConflict, UnknownPolicyObject
from callgate.policy.groups import GroupStore
from callgate.policy.specs import GroupSpec, RuleSpec
from callgate.policy.store import PolicyStore
from callgate.policy.turn_limits import GroupTurnLimits
from callgate.records.audit import AuditLog
from callgate.storage.db import Store, open_store

FRIDAY_NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    accounts = AccountService(opened, "callgate")
    accounts.create_user("alice", groups=["sales"])
    accounts.create_user("bob", groups=["legal", "sales"])
    yield opened
    opened.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_wall=FRIDAY_NOON.timestamp())


@pytest.fixture
def policy(store: Store, clock: ManualClock) -> PolicyStore:
    return PolicyStore(store, clock)


def names(policy: PolicyStore) -> list[tuple[int, str]]:
    return [(r.position, r.spec.name) for r in policy.rules()]


def audit(store: Store) -> list[tuple[str, str, dict[str, object]]]:
    """Policy and group entries, oldest first (accounts write their own)."""
    entries = [e for e in AuditLog(store).recent(100) if e.action.startswith(("policy.", "group."))]
    return [(e.action, e.object, json.loads(e.details)) for e in reversed(entries)]


def test_positions_stay_contiguous(policy: PolicyStore) -> None:
    a = policy.create_rule("root", RuleSpec("a", "allow"))
    b = policy.create_rule("root", RuleSpec("b", "deny"))
    policy.create_rule("root", RuleSpec("c", "allow"), position=1)
    assert names(policy) == [(1, "c"), (2, "a"), (3, "b")]
    policy.move_rule("root", b.id, 1)
    assert names(policy) == [(1, "b"), (2, "c"), (3, "a")]
    policy.move_rule("root", b.id, 3)
    assert names(policy) == [(1, "c"), (2, "a"), (3, "b")]
    policy.delete_rule("root", a.id)
    assert names(policy) == [(1, "c"), (2, "b")]
    with pytest.raises(InvalidPolicyValue, match=r"position must be 1\.\.2, got 5"):
        policy.move_rule("root", b.id, 5)
    with pytest.raises(UnknownPolicyObject, match="no rule 999"):
        policy.delete_rule("root", 999)


def test_a_refused_change_leaves_no_trace(policy: PolicyStore, store: Store) -> None:
    policy.create_rule("root", RuleSpec("a", "allow"))
    version, entries = policy.version(), len(audit(store))
    with pytest.raises(PolicyConflict, match="a rule named 'a' exists"):
        policy.create_rule("root", RuleSpec("a", "deny"))
    assert policy.version() == version
    assert len(audit(store)) == entries
    assert names(policy) == [(1, "a")]


def test_changes_are_audited_with_before_and_after(policy: PolicyStore, store: Store) -> None:
    rule = policy.create_rule("root", RuleSpec("a", "allow", caller_group="sales"))
    policy.update_rule("root", rule.id, RuleSpec("a", "deny", caller_group="sales"))
    policy.set_settings("root", default_action="deny", time_zone="Europe/Paris")
    policy.delete_rule("root", rule.id)
    actions = [(a, o) for a, o, _ in audit(store)]
    assert actions == [
        ("policy.rule_create", f"rule:{rule.id}"),
        ("policy.rule_update", f"rule:{rule.id}"),
        ("policy.settings", "policy:settings"),
        ("policy.rule_delete", f"rule:{rule.id}"),
    ]
    update = audit(store)[1][2]
    assert (update["before"]["action"], update["after"]["action"]) == ("allow", "deny")  # type: ignore[index]
    settings = audit(store)[2][2]
    assert settings == {
        "before": {"default_action": "allow", "time_zone": "UTC"},
        "after": {"default_action": "deny", "time_zone": "Europe/Paris"},
    }


def test_the_cache_follows_the_stored_version(
    policy: PolicyStore, store: Store, clock: ManualClock
) -> None:
    first = policy.current()
    assert policy.current() is first  # nothing changed: no reload
    clock.advance(1.0)
    assert policy.current() is first  # version checked, still the same
    assert policy.reloads == 1
    # Another process changes the policy: seen once the check interval has passed.
    other = PolicyStore(store, clock)
    other.create_rule("elsewhere", RuleSpec("block-alice", "deny", caller_user="alice"))
    clock.advance(0.1)
    assert policy.current() is first  # within the interval: the cached one
    clock.advance(0.5)
    assert [r.id for r in policy.current().rules] != [r.id for r in first.rules]
    denial, grant = policy.verdict("alice", "bob", FRIDAY_NOON)
    assert denial is not None and denial.rule.endswith(":block-alice") and grant is None


def test_verdict_carries_constraints_and_skips_disabled_rules(policy: PolicyStore) -> None:
    policy.create_rule("root", RuleSpec("off", "deny", enabled=False))
    policy.create_rule(
        "root", RuleSpec("legal", "allow", callee_group="legal", relay_only=True, max_duration_s=60)
    )
    denial, grant = policy.verdict("alice", "bob", FRIDAY_NOON)
    assert denial is None and grant is not None
    assert (grant.rule.split(":")[1], grant.relay_only, grant.max_duration_s) == ("legal", True, 60)
    decision, disabled = policy.explain("alice", "bob", FRIDAY_NOON)
    assert decision.rule_id is not None and decision.rule_id.endswith(":legal")
    assert disabled == [f"rule {policy.rules()[0].label} is disabled: not evaluated"]


def test_windows_are_read_in_the_policy_time_zone(policy: PolicyStore) -> None:
    policy.set_settings("root", time_zone="Asia/Tokyo")  # Friday 12:00 UTC is 21:00 in Tokyo
    policy.create_rule(
        "root", RuleSpec("evening", "deny", days=(4,), window_start="20:00", window_end="02:00")
    )
    denial, _ = policy.verdict("alice", "bob", FRIDAY_NOON)
    assert denial is not None
    denial, _ = policy.verdict("alice", "bob", datetime(2026, 11, 27, 10, 0, tzinfo=UTC))
    assert denial is None  # 19:00 in Tokyo


def test_groups_keep_membership_in_the_accounts(store: Store, policy: PolicyStore) -> None:
    groups = GroupStore(store)
    groups.create("root", GroupSpec("sales", "Sales", turn_max_allocations=4))
    groups.create("root", GroupSpec("legal", turn_max_allocations=2, turn_max_kbps=256))
    assert groups.get("sales").members == ("alice", "bob")
    groups.remove_member("root", "sales", "bob")
    assert groups.get("sales").members == ("alice",)
    with pytest.raises(PolicyConflict, match="'bob' is not in group 'sales'"):
        groups.remove_member("root", "sales", "bob")
    # bob (legal; sales no more) gets legal's TURN limits; alice those of sales.
    limits = GroupTurnLimits(store)
    assert limits.load() == 2
    bob = limits("bob")
    assert bob is not None and (bob.max_allocations, bob.bytes_per_s) == (2, 256 * 125)
    alice = limits("alice")
    assert alice is not None and (alice.max_allocations, alice.bytes_per_s) == (4, None)

    policy.create_rule("root", RuleSpec("wall", "deny", caller_group="sales", callee_group="legal"))
    with pytest.raises(PolicyConflict, match="group 'legal' is used by rule"):
        groups.delete("root", "legal")
    policy.delete_rule("root", policy.rules()[0].id)
    groups.delete("root", "legal")
    assert AccountService(store, "callgate").get("bob").groups == ()  # type: ignore[union-attr]
    assert [a for a, _, _ in audit(store) if a.startswith("group.")] == [
        "group.create", "group.create", "group.member_remove", "group.delete",
    ]  # fmt: skip


def test_the_hubs_reads_open_no_transaction_and_see_group_changes_at_once(
    store: Store, policy: PolicyStore
) -> None:
    """The per-attempt reads (the parties' groups, the version) leave no transaction open on
    their connection (on PostgreSQL: no BEGIN before, no ROLLBACK after them), and each sees
    the latest commit."""
    from sqlalchemy import event

    watching = False
    open_at_return: list[bool] = []

    def returned(driver, *_args) -> None:  # type: ignore[no-untyped-def]
        if watching:
            open_at_return.append(_in_transaction(driver))

    event.listen(store.read_engine.pool, "reset", returned)
    try:
        watching = True
        found = policy.subjects("alice", "bob")
        watching = False
        AccountService(store, "callgate").update_profile("alice", groups=["legal"])
        watching = True
        again = policy.subjects("alice", "bob")
        policy.version()
    finally:
        event.remove(store.read_engine.pool, "reset", returned)
    assert found["alice"].groups == ("sales",) and again["alice"].groups == ("legal",)
    assert open_at_return == [False, False, False]


def test_reads_survive_connections_the_server_dropped(
    store: Store, policy: PolicyStore, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL: the read pool does not ping its connections, so after the server dropped
    them (a restart) a decision retries once on a new connection instead of failing."""
    if store.reads is None:
        pytest.skip("SQLite has no separate read pool")
    from sqlalchemy import text

    def drop_connections() -> int:
        with store.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )

    before = policy.verdict("alice", "bob", FRIDAY_NOON)
    version = policy.version()
    assert drop_connections() >= 1  # the read pool's connection
    assert policy.verdict("alice", "bob", FRIDAY_NOON) == before  # the raw cursor's read
    assert drop_connections() >= 1
    assert policy.version() == version  # a read through SQLAlchemy's execution
    assert policy.subjects("alice", "bob")["bob"].groups == ("legal", "sales")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def _in_transaction(driver) -> bool:  # type: ignore[no-untyped-def]
    """Whether a DB-API connection (psycopg or sqlite3) is inside a transaction right now."""
    info = getattr(driver, "info", None)
    if info is not None and hasattr(info, "transaction_status"):  # psycopg
        from psycopg.pq import TransactionStatus

        return bool(info.transaction_status != TransactionStatus.IDLE)
    return bool(driver.in_transaction)


def test_verdicts_for_a_ring_group_match_each_members_verdict(policy: PolicyStore) -> None:
    """A ring group's members judged at once (one accounts query) decide as one by one."""
    policy.create_rule("root", RuleSpec("no-legal", "deny", callee_group="legal"))
    policy.create_rule(
        "root", RuleSpec("record-sales", "allow", callee_group="sales", recording_required=True)
    )
    members = ["alice", "bob", "nobody"]  # bob: legal and sales; nobody: no account
    together = policy.verdicts("+15550001111", members, FRIDAY_NOON)
    assert together == {h: policy.verdict("+15550001111", h, FRIDAY_NOON) for h in members}
    assert together["bob"][0] is not None and together["alice"][1] is not None
    assert together["alice"][1].recording_required


def test_verdicts_for_pairs_match_each_pairs_verdict(policy: PolicyStore) -> None:
    """Invites that arrive together (signaling/lookups.py), judged with one accounts query,
    decide as one by one: in both directions, with unknown parties, a pair twice."""
    policy.create_rule("root", RuleSpec("no-legal", "deny", callee_group="legal"))
    policy.create_rule(
        "root", RuleSpec("record-sales", "allow", callee_group="sales", recording_required=True)
    )
    pairs = [("alice", "bob"), ("bob", "alice"), ("nobody", "alice"), ("alice", "bob")]
    together = policy.verdict_pairs(pairs, FRIDAY_NOON)
    assert together == [policy.verdict(a, b, FRIDAY_NOON) for a, b in pairs]
    assert together[0][0] is not None and together[1][1] is not None
    assert policy.verdict_pairs([], FRIDAY_NOON) == []
