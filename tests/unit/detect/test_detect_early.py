"""`EarlyWrites`: the monitor inside `serve` writes a finding seen for the first time at once, but
its checks take a bounded share of the capture process's time and its immediate writes are
capped per second, with what the cap defers counted once per finding."""

from __future__ import annotations

import pytest

from callgate.detect.live.early import EarlyWrites


def test_checks_are_spaced_by_their_cost_and_a_minimum_gap() -> None:
    early = EarlyWrites(min_gap=0.05, share=0.2)
    assert early.may_check(0.0)
    early.checked(0.0, 0.001)  # cheap: the minimum gap applies
    assert not early.may_check(0.04) and early.may_check(0.06)
    early.checked(1.0, 1.1)  # 0.1 s of work: 0.4 s of rest keeps the share at 20 %
    assert not early.may_check(1.49) and early.may_check(1.51)


def test_immediate_writes_are_capped_per_second_and_deferred_findings_counted_once() -> None:
    early = EarlyWrites(writes_per_s=2)
    assert early.may_write(10.0, ["a"]) == 1 and early.may_write(10.0, ["b"]) == 1  # a burst
    assert early.may_write(10.1, ["c", "d"]) == 0
    assert early.may_write(10.2, ["c", "d", "e"]) == 0  # c and d wait already
    assert early.may_write(10.7, ["c"]) == 1  # refilled at 2 a second: c written at once
    early.batched(stored=True)  # the interval's update wrote d and e: those the cap deferred
    assert (early.writes, early.deferred) == (3, 2)
    assert early.may_write(10.7, ["c"]) == 0  # a new shortage counts anew
    early.batched(stored=True)
    assert (early.writes, early.deferred) == (3, 3)


def test_one_write_takes_at_most_per_write_findings_the_rest_wait() -> None:
    early = EarlyWrites(writes_per_s=10, per_write=20)
    burst = [f"finding-{i}" for i in range(500)]  # a scan: 500 new findings at once
    assert early.may_write(10.0, burst) == 20  # one transaction of 20, not of 500
    assert early.may_write(10.0, burst[20:]) == 20  # the next write takes the next 20
    early.batched(stored=True)  # the interval's update stores the other 460
    assert (early.writes, early.deferred) == (2, 460)
    assert early.may_write(10.0, []) == 0 and early.writes == 2  # nothing new: no token spent


def test_a_database_that_stays_down_does_not_grow_the_memory_of_deferred_findings() -> None:
    early = EarlyWrites(writes_per_s=1, max_keys=100)
    early.may_write(0.0, ["first"])
    for second in range(50):  # new findings every check, every update failing
        early.may_write(second + 0.5, [f"{second}-{i}" for i in range(1000)])
        early.batched(stored=False)
        assert len(early._waiting) <= 100
    early.batched(stored=True)
    assert early.deferred <= 100 and not early._waiting


def test_bad_pacing_is_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        EarlyWrites(share=0)
