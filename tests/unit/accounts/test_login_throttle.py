"""LoginThrottle on a manual clock: free failures, delays that double and pass, charge-first
admission (parallel guesses cannot slip through), bounded memory."""

from __future__ import annotations

import pytest

from callgate.accounts.throttle import LoginThrottle, ThrottleRule
from callgate.clock import ManualClock


def throttle(clock: ManualClock, max_keys: int = 100) -> LoginThrottle:
    return LoginThrottle(
        clock,
        account=ThrottleRule(free=3, base_s=1.0, max_delay_s=8.0, forget_s=100.0),
        address=ThrottleRule(free=5, base_s=1.0, max_delay_s=8.0, forget_s=100.0),
        max_keys=max_keys,
    )


def test_delays_double_after_the_free_failures_and_pass() -> None:
    clock = ManualClock()
    limiter = throttle(clock)
    for _ in range(3):
        assert limiter.admit("alice", None) is None  # three free failures
    waits = []
    for _ in range(6):
        refusal = limiter.admit("alice", None)
        assert refusal is not None and refusal.key == "account"
        waits.append(refusal.retry_after_s)
        clock.advance(refusal.retry_after_s)
        assert limiter.admit("alice", None) is None  # the delay passed: one more try
    assert waits == [1, 2, 4, 8, 8, 8]


def test_parallel_guesses_are_charged_before_their_answer() -> None:
    limiter = throttle(ManualClock())
    admitted = [limiter.admit("alice", None) is None for _ in range(10)]  # none answered yet
    assert admitted == [True] * 3 + [False] * 7


def test_success_clears_the_account_and_gives_back_the_address_charge() -> None:
    clock = ManualClock()
    limiter = throttle(clock)
    for _ in range(3):
        limiter.admit("alice", "192.0.2.1")
    limiter.succeeded("alice", "192.0.2.1")
    assert limiter.admit("alice", "192.0.2.1") is None  # the account starts over
    for handle in ("b", "c"):
        assert limiter.admit(handle, "192.0.2.1") is None
    refusal = limiter.admit("d", "192.0.2.1")  # 5 charged on the address (3 - 1 + 1 + 2)
    assert refusal is not None and refusal.key == "address"


def test_first_refusal_is_flagged_once_per_run() -> None:
    clock = ManualClock()
    limiter = throttle(clock)
    for _ in range(3):
        limiter.admit("alice", None)
    flags = [r.first for r in (limiter.admit("alice", None), limiter.admit("alice", None)) if r]
    assert flags == [True, False]


def test_quiet_keys_are_forgotten_and_memory_is_bounded() -> None:
    clock = ManualClock()
    limiter = throttle(clock, max_keys=10)
    for _ in range(4):
        limiter.admit("alice", None)
    clock.advance(100)
    assert limiter.admit("alice", None) is None
    for i in range(50):
        limiter.admit(f"user{i}", None)
    assert len(limiter._counts) <= 10


@pytest.mark.parametrize("order", ["account first", "address first"])
def test_an_exempt_request_skips_the_account_by_kind_whatever_the_key_order(
    order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIP phone's in-dialog request (`account=False`, sip/auth.py) is judged by its address
    alone, however `_keys` lists the keys: it once dropped the first key, whatever it was."""
    limiter = throttle(ManualClock())
    if order == "address first":
        keys = LoginThrottle._keys
        monkeypatch.setattr(limiter, "_keys", lambda h, a: keys(limiter, h, a)[::-1])
    for _ in range(4):  # alice.desk's name is locked out (someone failed under it)
        limiter.admit("alice.desk", "203.0.113.9")
    locked = limiter.admit("alice.desk", "192.0.2.5")
    assert locked is not None and locked.key == "account"
    # the phone's own BYE from its call's address: admitted, and the account not charged more
    assert limiter.admit("alice.desk", "192.0.2.5", account=False) is None
    assert limiter.admit("alice.desk", "192.0.2.5", account=False) is None
    refused = limiter.admit("alice.desk", "192.0.2.5")
    assert refused is not None and refused.retry_after_s == locked.retry_after_s  # as before
    # its address's own limit still applies to it
    for _ in range(3):
        limiter.admit("bob.desk", "192.0.2.5", account=False)
    address = limiter.admit("alice.desk", "192.0.2.5", account=False)
    assert address is not None and address.key == "address"
