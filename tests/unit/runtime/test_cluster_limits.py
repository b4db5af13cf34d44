"""The pure parts of the cluster's trunk limits (runtime/cluster_limits.py): the script's answers
as the edge's refusals, and key names no trunk or user can forge."""

from __future__ import annotations

from callgate.runtime.cluster_limits import key, refusal
from callgate.sip.trunk_limits import FULL, TOO_FAST, USER_CALLS


def test_redis_answers_and_key_names() -> None:
    assert refusal([b"ok", b"0"]) is None
    assert refusal([b"calls", b"0"]) is FULL
    assert refusal([b"rate", b"0"]) is TOO_FAST
    assert refusal([b"user-calls", b"0"]) is USER_CALLS
    hour = refusal([b"user-hour", b"2999.2"])
    assert hour is not None and hour.retry_after == 3000 and hour.status == 503
    # no trunk or user name can pose as another's key
    assert key("user-calls", "a:b", "c") != key("user-calls", "a", "b:c")
    assert key("user-calls", 'a", "b', "c") != key("user-calls", "a", 'b", "c')
