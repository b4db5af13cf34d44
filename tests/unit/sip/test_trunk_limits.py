"""Per-trunk limits: channels at once (486) and call attempts a second (503 + Retry-After)."""

from __future__ import annotations

from callgate.clock import ManualClock
from callgate.sip.trunk_limits import (
    FULL,
    UNAVAILABLE,
    LimitsUnavailable,
    Refusal,
    TrunkLimited,
    TrunkLimits,
    UserLimit,
)


def test_channels_are_taken_and_given_back() -> None:
    limits = TrunkLimits(ManualClock())
    assert limits.acquire("uk", 2, None, "outbound") is None
    assert limits.acquire("uk", 2, None, "inbound") is None
    full = limits.acquire("uk", 2, None, "outbound")
    assert full is not None and (full.status, full.limit) == (486, "calls")
    assert limits.acquire("other", 2, None, "outbound") is None  # per trunk
    limits.release("uk")
    assert limits.acquire("uk", 2, None, "outbound") is None
    assert limits.refused[("uk", "calls")] == 1 and limits.attempts[("uk", "outbound")] == 3
    assert limits.active["uk"] == 2


def test_an_emergency_call_is_counted_but_never_refused() -> None:
    limits = TrunkLimits(ManualClock())
    assert limits.acquire("uk", 1, 1.0, "outbound") is None  # the one channel, the one token
    assert limits.acquire("uk", 1, 1.0, "outbound") is not None
    assert limits.acquire("uk", 1, 1.0, "outbound", emergency=True) is None
    assert limits.active["uk"] == 2


def test_call_rate_allows_a_burst_then_says_when_to_retry() -> None:
    clock = ManualClock()
    limits = TrunkLimits(clock)
    assert [limits.acquire("uk", None, 2.0, "inbound") for _ in range(2)] == [None, None]
    fast = limits.acquire("uk", None, 2.0, "inbound")
    assert fast is not None and fast.status == 503
    assert TrunkLimited(fast).headers == [("Retry-After", "1")]
    assert TrunkLimited(fast).cdr == ("failed", "trunk-rate-limited")
    clock.advance(0.5)  # one token back
    assert limits.acquire("uk", None, 2.0, "inbound") is None
    assert limits.acquire("uk", None, 2.0, "inbound") is not None


def test_an_alert_once_a_run_of_refusals() -> None:
    limits = TrunkLimits(ManualClock())
    assert limits.first_of_run("uk") and not limits.first_of_run("uk")
    assert limits.acquire("uk", 5, None, "outbound") is None  # a call got through: run over
    assert limits.first_of_run("uk")


def test_a_rate_under_one_a_second_still_lets_one_call_through() -> None:
    clock = ManualClock()
    limits = TrunkLimits(clock)
    assert limits.acquire("slow", None, 0.1, "inbound") is None
    assert limits.acquire("slow", None, 0.1, "inbound") is not None
    clock.advance(10)
    assert limits.acquire("slow", None, 0.1, "inbound") is None


def test_a_users_share_of_a_trunk_at_once_and_per_hour() -> None:
    from callgate.sip.trunk_limits import UserLimit

    clock = ManualClock()
    limits = TrunkLimits(clock)
    alice, bob = UserLimit("alice", 2, 3), UserLimit("bob", 2, 3)
    assert limits.acquire("uk", 30, None, "outbound", user=alice) is None
    assert limits.acquire("uk", 30, None, "outbound", user=alice) is None
    busy = limits.acquire("uk", 30, None, "outbound", user=alice)
    assert busy is not None and (busy.status, busy.limit) == (403, "user-calls")
    assert busy.reason == "Forbidden (dial-out limit: calls at once per user)"
    assert TrunkLimited(busy).cdr == ("denied", "dial-out-limit")
    assert TrunkLimited(busy).headers == []  # RFC 3261 §20.33: no Retry-After on a 403
    assert limits.acquire("uk", 30, None, "outbound", user=bob) is None  # per user
    assert limits.acquire("us", 30, None, "outbound", user=alice) is None  # per trunk
    # an emergency call is never refused, whatever the user's count
    assert limits.acquire("uk", 30, None, "outbound", emergency=True, user=alice) is None
    # the first refusal of a run is the one to audit
    assert limits.first_of_user_run("uk", "alice") and not limits.first_of_user_run("uk", "alice")

    limits.release("uk", "alice")
    clock.advance(600)
    assert limits.acquire("uk", 30, None, "outbound", user=alice) is None  # her third this hour
    limits.release("uk", "alice")
    limits.release("uk", "alice")
    assert limits.user_active[("uk", "alice")] == 0
    hourly = limits.acquire("uk", 30, None, "outbound", user=alice)
    # her first call of the hour leaves the window 3000 s from now
    assert hourly is not None and (hourly.status, hourly.limit) == (503, "user-hour")
    assert TrunkLimited(hourly).headers == [("Retry-After", "3000")]
    assert limits.refused[("uk", "user-calls")] == 1
    assert limits.refused[("uk", "user-hour")] == 1
    clock.advance(3000)
    assert limits.acquire("uk", 30, None, "outbound", user=alice) is None
    assert limits.first_of_user_run("uk", "alice")  # a new run after a call got through


class _Shared:
    """The cluster's limits as the edge sees them: an answer, or unreachable."""

    def __init__(self, answer: Refusal | None = None, down: bool = False) -> None:
        self.answer, self.down = answer, down
        self.taken: list[tuple[str, UserLimit | None, bool]] = []
        self.released: list[str] = []

    async def take(
        self,
        lease: str,
        trunk: str,
        max_calls: int | None,
        max_cps: float | None,
        user: UserLimit | None,
        emergency: bool,
    ) -> Refusal | None:
        if self.down:
            raise LimitsUnavailable("Redis unreachable: connection refused")
        self.taken.append((lease, user, emergency))
        return self.answer

    def release(self, lease: str) -> None:
        self.released.append(lease)


async def test_the_clusters_limits_decide_and_this_node_counts() -> None:
    alice = UserLimit("alice", 1, 1)
    cluster = _Shared()
    limits = TrunkLimits(ManualClock(), cluster)
    # the node's own limits no longer apply: the cluster said yes
    assert await limits.admit("l1", "uk", 1, None, "outbound", user=alice) is None
    assert await limits.admit("l2", "uk", 1, None, "outbound", user=alice) is None
    assert limits.active["uk"] == 2 and limits.user_active[("uk", "alice")] == 2
    # an emergency call is not the user's share there either
    assert await limits.admit("l3", "uk", 1, None, "outbound", emergency=True, user=alice) is None
    assert cluster.taken[-1] == ("l3", None, True)
    limits.release("uk", "alice", "l1")
    assert cluster.released == ["l1"] and limits.user_active[("uk", "alice")] == 1
    cluster.answer = FULL
    assert await limits.admit("l4", "uk", 1, None, "inbound") is FULL
    assert limits.refused[("uk", "calls")] == 1 and limits.attempts[("uk", "inbound")] == 1


async def test_cluster_store_down_refuses_new_calls_but_not_emergency_ones() -> None:
    limits = TrunkLimits(ManualClock(), _Shared(down=True))
    refused = await limits.admit("l1", "uk", 30, 5.0, "outbound", user=UserLimit("bob", 3, 9))
    assert refused is UNAVAILABLE and refused.status == 503
    assert TrunkLimited(refused).cdr == ("failed", "setup-failed")
    assert TrunkLimited(refused).headers == [("Retry-After", "1")]
    assert await limits.admit("l2", "uk", 30, 5.0, "outbound", emergency=True) is None
    assert limits.refused[("uk", "unavailable")] == 1 and limits.active["uk"] == 1
    # a trunk without limits does not need the cluster store
    unlimited = UserLimit("bob", None, None)
    assert await limits.admit("l3", "open", None, None, "outbound", user=unlimited) is None
