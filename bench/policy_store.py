"""What the hub pays per call attempt for a stored policy of 1,000 rules, on SQLite.

Fills a temporary store with N rules (bulk insert) and U users in groups, then measures: loading
the rules into a `Policy` (what every process does after a change), `PolicyStore.verdict` (one
query for both parties' groups + the cached decision: the hub's cost per call attempt, run in a
worker thread), and one audited rule change (transaction + version bump + audit entry).

    .venv/bin/python bench/policy_store.py [--rules 1000] [--users 500] [--calls 5000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, update

from callgate.policy.specs import RuleSpec
from callgate.policy.store import PolicyStore
from callgate.storage.db import open_store, sqlite_url
from callgate.storage.models import PolicyRule, PolicySettings, User, utcnow


def fill(store_dir: Path, n_rules: int, n_users: int, rng: random.Random) -> PolicyStore:
    store = open_store(sqlite_url(store_dir))
    now = utcnow()
    groups = [f"g{i}" for i in range(40)]
    users = [
        {"handle": f"u{i}", "display_name": f"u{i}", "realm": "callgate", "is_admin": False,
         "disabled": False, "created_at": now, "updated_at": now,
         "groups": json.dumps(rng.sample(groups, 2))}
        for i in range(n_users)
    ]  # fmt: skip
    rules = []
    for i in range(n_rules):
        side = rng.random()
        rules.append(
            {"position": i + 1, "name": f"r{i}", "action": rng.choice(["allow", "deny"]),
             "enabled": True, "caller_user": f"u{rng.randrange(n_users)}" if side < 0.7 else None,
             "caller_group": rng.choice(groups) if side >= 0.7 else None,
             "callee_user": None, "callee_group": rng.choice(groups),
             "days": "0,1,2,3,4" if i % 5 == 0 else None,
             "window_start": "08:00" if i % 5 == 0 else None,
             "window_end": "18:00" if i % 5 == 0 else None, "wall": i % 50 == 0,
             "relay_only": False, "max_duration_s": None, "recording_required": False,
             "reason": "", "created_at": now, "updated_at": now}
        )  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(insert(User), users)
        conn.execute(insert(PolicyRule), rules)
        conn.execute(update(PolicySettings).values(version=PolicySettings.version + 1))
    return PolicyStore(store)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        policy = fill(Path(tmp), args.rules, args.users, rng)
        started = time.perf_counter()
        loads = 20
        for _ in range(loads):
            policy.invalidate()
            policy.current()
        load_ms = (time.perf_counter() - started) / loads * 1000
        at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
        pairs = [(f"u{rng.randrange(args.users)}", f"u{rng.randrange(args.users)}")
                 for _ in range(args.calls)]  # fmt: skip
        started = time.perf_counter()
        for caller, callee in pairs:
            policy.verdict(caller, callee, at)
        per_call = (time.perf_counter() - started) / len(pairs)
        started = time.perf_counter()
        changes = 50
        for i in range(changes):
            policy.create_rule("bench", RuleSpec(f"new{i}", "deny", caller_user="nobody"))
        change_ms = (time.perf_counter() - started) / changes * 1000
    print(f"policy store: {args.rules} rules, {args.users} users, SQLite")
    print(f"load rules into Policy        {load_ms:8.2f} ms")
    print(f"verdict (query + decide)      {per_call * 1e6:8.1f} µs/call  ({1 / per_call:,.0f}/s)")
    print(f"audited rule change           {change_ms:8.2f} ms")


if __name__ == "__main__":
    main()
