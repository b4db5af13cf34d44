"""Accounts for the users a test makes before its server starts, with cheap password hashes.

A hash carries its argon2id parameters, so a server verifies every sign-in of such a user at that
cost. The product's default (RFC 9106, ~0.2 s of CPU a verification) is for real accounts; the
test servers sign their users in hundreds of times. Users added through `callgate user add` or a
server's API keep the default, and tests/integration/test_cli.py checks what it stores.
"""

from __future__ import annotations

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.storage.db import Store

CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)


def template_accounts(store: Store) -> AccountService:
    """The store's accounts, hashing new passwords at CHEAP's cost."""
    return AccountService(store, "callgate", passwords=Passwords(CHEAP))
