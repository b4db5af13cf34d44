"""The TURN authentication throttle: token bucket per key, growing blocks, one summary per block."""

from __future__ import annotations

from callgate.clock import ManualClock
from callgate.turn.throttle import AuthThrottle, FailureThrottle
from callgate.types.events import AuthThrottled


def test_a_burst_of_failures_blocks_with_growing_blocks() -> None:
    throttle = FailureThrottle("address", burst=3, rate=0.1, base_block=10, max_block=40)
    assert [throttle.failure("a", 0.0) for _ in range(3)] == [None, None, None]
    first = throttle.failure("a", 0.0)
    assert first is not None and (first.failures, first.blocked_s, first.strike) == (4, 10, 1)
    assert throttle.blocked("a", 5.0) == 5.0
    assert throttle.blocked("b", 5.0) == 0.0  # other keys are not affected
    assert throttle.blocked("a", 10.0) == 0.0
    second = throttle.failure("a", 10.0)  # one token back after 10 s: not enough
    assert second is None
    third = throttle.failure("a", 10.0)
    assert third is not None and (third.blocked_s, third.strike, third.refused) == (20, 2, 1)
    for _ in range(10):
        throttle.failure("a", 30.0)
    assert throttle.blocked("a", 30.0) == 40  # 40, 80, ... capped at max_block


def test_quiet_keys_start_over_and_are_forgotten() -> None:
    throttle = FailureThrottle("username", burst=1, rate=0.0, base_block=10, max_block=10)
    throttle.failure("u", 0.0)
    assert throttle.failure("u", 0.0) is not None
    throttle.failure("u", 100.0)  # quiet for forget_after (2 x max_block): a fresh bucket
    burst = throttle.failure("u", 100.0)
    assert burst is not None and burst.strike == 1
    throttle.sweep(1000.0)
    assert len(throttle) == 0


def test_state_is_bounded() -> None:
    throttle = FailureThrottle("address", max_keys=100)
    for n in range(1000):
        throttle.failure(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(throttle) == 100


class Sink:
    def __init__(self) -> None:
        self.events: list[AuthThrottled] = []

    def auth_throttled(self, event: AuthThrottled) -> None:
        self.events.append(event)


def test_auth_throttle_reports_each_block_once() -> None:
    clock = ManualClock()
    sink = Sink()
    throttle = AuthThrottle(clock, sink)
    for _ in range(50):
        if not throttle.blocked("192.0.2.1", "alice"):
            throttle.failed("192.0.2.1", "alice")
    assert throttle.blocked("192.0.2.1", "alice") > 0
    assert throttle.blocked("192.0.2.2", "alice") > 0  # the username is blocked too
    assert throttle.blocked("192.0.2.2", "bob") == 0
    assert [(e.scope, e.key, e.failures) for e in sink.events] == [
        ("address", "192.0.2.1", 11),
        ("username", "alice", 11),
    ]
