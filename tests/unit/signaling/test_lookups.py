"""signaling/lookups.py: invites' lookups go to the worker thread one trip at a time; those that
wait share the next trip, each gets its own answer (or its own error), and an invite given up
meanwhile (its socket closed) costs the others nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from callgate.signaling.lookups import Answer, Lookup, LookupTrips
from callgate.types.decisions import Denial

DENIED = Denial(rule="r", reason="no")


def _lookup(caller: str, callee: str) -> Lookup:
    return Lookup(caller, callee, lambda handle: True)


class _Worker:
    """`run` for LookupTrips: records each trip; the first trip waits until `release` is set."""

    def __init__(self) -> None:
        self.trips: list[list[str]] = []
        self.release = threading.Event()

    def run(self, lookups: Sequence[Lookup]) -> list[Answer]:
        self.trips.append([f"{x.caller}>{x.callee}" for x in lookups])
        assert self.release.wait(15)
        answers: list[Answer] = []
        for x in lookups:
            if x.callee == "broken":
                answers.append(LookupError("directory unreadable"))
            else:
                answers.append((True, (DENIED, None) if x.callee == "bob" else (None, None)))
        return answers


async def test_waiting_invites_share_the_next_trip_each_with_its_own_answer() -> None:
    worker = _Worker()
    trips = LookupTrips(worker.run)
    first = asyncio.create_task(trips.lookup(_lookup("a", "c")))
    await asyncio.sleep(0)  # the first trip is out
    waiting = [
        asyncio.create_task(trips.lookup(_lookup(caller, callee)))
        for caller, callee in (("d", "bob"), ("e", "broken"), ("f", "gone"), ("g", "c"))
    ]
    await asyncio.sleep(0)
    waiting[2].cancel()  # f's socket closed while it waited
    worker.release.set()
    assert await first == (True, (None, None))
    assert await waiting[0] == (True, (DENIED, None))
    with pytest.raises(LookupError, match="unreadable"):
        await waiting[1]
    with pytest.raises(asyncio.CancelledError):
        await waiting[2]
    assert await waiting[3] == (True, (None, None))
    assert worker.trips == [["a>c"], ["d>bob", "e>broken", "f>gone", "g>c"]]


async def test_a_failed_trip_fails_its_invites_and_the_next_trip_still_goes() -> None:
    calls = []

    def run(lookups: Sequence[Lookup]) -> list[Answer]:
        calls.append(len(lookups))
        if len(calls) == 1:
            raise RuntimeError("worker failed")
        return [(True, (None, None)) for _ in lookups]

    trips = LookupTrips(run)
    with pytest.raises(RuntimeError, match="worker failed"):
        await trips.lookup(_lookup("a", "b"))
    assert await trips.lookup(_lookup("a", "b")) == (True, (None, None))
    assert calls == [1, 1]


async def test_an_invite_given_up_on_a_hung_trip_drops_its_late_answer() -> None:
    """The hub's bound (LOOKUP_TIMEOUT) gives up on a trip blocked on the worker thread; when
    the trip comes back its answer for that invite goes nowhere and the next trip still goes."""
    worker = _Worker()
    trips = LookupTrips(worker.run)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(trips.lookup(_lookup("d", "bob")), 0.05)
    waiting = asyncio.create_task(trips.lookup(_lookup("a", "c")))  # behind the hung trip
    await asyncio.sleep(0)
    worker.release.set()
    assert await asyncio.wait_for(waiting, 15) == (True, (None, None))
    assert worker.trips == [["d>bob"], ["a>c"]]
