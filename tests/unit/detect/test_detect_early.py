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
    assert early.may_write(10.0, ["a"]) and early.may_write(10.0, ["b"])  # a burst of 2
    assert not early.may_write(10.1, ["c", "d"])
    assert not early.may_write(10.2, ["c", "d", "e"])  # c and d were counted already
    assert (early.writes, early.deferred) == (2, 3)
    assert early.may_write(10.7, ["c"])  # refilled at 2 a second
    early.batched()  # the interval's update wrote them: a new shortage counts anew
    assert not early.may_write(10.7, ["c"])
    assert (early.writes, early.deferred) == (3, 4)


def test_bad_pacing_is_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        EarlyWrites(share=0)
