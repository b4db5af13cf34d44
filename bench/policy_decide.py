"""Policy decision time with 1,000 rules (pure evaluation, no database).

Builds a policy of N rules (default 1,000) shaped like a real deployment: per-user rules (most of
them), group rules including bidirectional ethical walls, and a few anyone-to-anyone rules with time
windows in Europe/Berlin, then a default. Measures `Policy.decide` (indexed on the caller side) for
random caller/callee pairs at random instants, and `Policy.explain` (examines every rule up to the
match, as `callgate policy explain` does) and `decide(explain=False)` (no text formatted, the
hub's hot path) for comparison, plus the worst case for `decide`: a
caller in every group with no matching rule, so every candidate is examined.

    .venv/bin/python bench/policy_decide.py
    .venv/bin/python bench/policy_decide.py --rules 5000 --decisions 50000
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from callgate.policy.rules import Action, Decision, Party, Policy, Rule, Subject, TimeWindow

GROUPS = [f"g{i}" for i in range(40)]


def build_policy(n_rules: int, n_users: int, rng: random.Random) -> Policy:
    rules: list[Rule] = []
    for i in range(n_rules):
        kind = i % 20
        window = None
        if kind < 14:  # per-user rule
            caller = Party(user=f"u{rng.randrange(n_users)}")
            callee = Party(user=f"u{rng.randrange(n_users)}") if kind % 2 else Party()
            bidirectional = False
        elif kind < 19:  # group rule or ethical wall
            caller = Party(group=rng.choice(GROUPS))
            callee = Party(group=rng.choice(GROUPS))
            bidirectional = kind == 18
        else:  # anyone, in a time window (some crossing midnight)
            caller = callee = Party()
            start = rng.randrange(24)
            window = TimeWindow(
                frozenset(rng.sample(range(7), 3)),
                datetime(2026, 1, 1, start).time(),
                datetime(2026, 1, 1, (start + 6) % 24).time(),
            )
            bidirectional = False
        action: Action = "deny" if bidirectional or rng.random() < 0.5 else "allow"
        rules.append(
            Rule(
                id=f"r{i}",
                order=rng.randrange(n_rules),
                caller=caller,
                callee=callee,
                action=action,
                when=window,
                bidirectional=bidirectional,
                max_duration_s=3600 if action == "allow" and i % 3 == 0 else None,
            )
        )
    return Policy(rules, default_action="allow", timezone="Europe/Berlin")


def measure(
    label: str,
    fn: Callable[[Subject, Subject, datetime], Decision],
    cases: list[tuple[Subject, Subject, datetime]],
) -> None:
    for caller, callee, at in cases[:200]:  # warm up
        fn(caller, callee, at)
    started = time.perf_counter()
    for caller, callee, at in cases:
        fn(caller, callee, at)
    elapsed = time.perf_counter() - started
    per_s = len(cases) / elapsed
    print(f"{label:<34} {per_s:>12,.0f} decisions/s {1e6 * elapsed / len(cases):>9.2f} µs/decision")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    policy = build_policy(args.rules, args.users, rng)

    def subject() -> Subject:
        return Subject(f"u{rng.randrange(args.users)}", tuple(rng.sample(GROUPS, 2)))

    base = datetime(2026, 1, 1, tzinfo=UTC)
    cases = [
        (subject(), subject(), base + timedelta(seconds=rng.randrange(365 * 86400)))
        for _ in range(args.decisions)
    ]
    worst = Subject("nobody", tuple(GROUPS))
    worst_cases = [(worst, Subject("nobody-else"), at) for _, _, at in cases]
    print(f"policy: {args.rules} rules, {args.users} users, {len(GROUPS)} groups, Europe/Berlin")

    def quiet(caller: Subject, callee: Subject, at: datetime) -> Decision:
        return policy.decide(caller, callee, at, explain=False)

    measure("decide(explain=False) (indexed)", quiet, cases)
    measure("decide (indexed, explained)", policy.decide, cases)
    measure("explain (full scan to match)", policy.explain, cases)
    measure("decide(explain=False), all groups", quiet, worst_cases)
    measure("decide, caller in every group", policy.decide, worst_cases)
    measure("explain, caller in every group", policy.explain, worst_cases)


if __name__ == "__main__":
    main()
