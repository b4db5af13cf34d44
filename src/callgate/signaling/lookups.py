"""Invites' lookups (the callee exists, the policy's verdict) on a worker thread, those that
arrive together in one trip.

Each trip to a worker thread costs the process far more than the lookup: the thread's wake-up,
the GIL handed to it and back, the loop's wake-up for the answer — ≈ 0.3-0.7 ms of CPU per invite
on a busy box with PostgreSQL, more than the query (bench/README.md). So one trip runs at a
time: the invites that arrive while it is out wait for the next one, which decides them all
with one read of their parties (hub_types.py, `PairPolicy`). Under load a trip carries several invites; alone,
an invite goes at once, as before. Each invite's answer is the one it would get alone. A
hung read holds its trip's invites (and the ones waiting behind it) at most LOOKUP_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from callgate.types.decisions import Denial, Grant

log = logging.getLogger(__name__)

# The longest an invite waits for its trip (seconds) before it is denied as when the policy
# cannot be read (hub_invites.py); the trip's late answer is then discarded. Above what a
# healthy read can take — SQLite waits up to its busy_timeout (5 s, storage/db.py) for a lock,
# a PostgreSQL read that finds its pooled connection dead reconnects within PG_CONNECT_TIMEOUT
# (10 s) — so only a hung database read meets it.
LOOKUP_TIMEOUT = 15.0

Verdict = tuple[Denial | None, Grant | None]
Found = tuple[bool, Verdict]  # the callee exists; the policy's verdict (None, None: not asked)
# What a trip answers for one lookup: found, or why it failed (raised in that invite alone).
Answer = Found | Exception


@dataclass(frozen=True, slots=True)
class Lookup:
    caller: str
    callee: str
    callee_exists: Callable[[str], bool]


class LookupTrips:
    """`run(lookups)` (on a worker thread, answers in order) for the invites waiting together."""

    def __init__(self, run: Callable[[Sequence[Lookup]], list[Answer]]) -> None:
        self._run = run
        self._waiting: list[tuple[Lookup, asyncio.Future[Found]]] = []
        self._out = False  # a trip is on the worker thread

    async def lookup(self, lookup: Lookup) -> Found:
        finished: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
        self._waiting.append((lookup, finished))
        if not self._out:
            self._start()
        return await finished

    def _start(self) -> None:
        trip, self._waiting = self._waiting, []
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(None, self._run, [lookup for lookup, _ in trip])
        except RuntimeError as exc:  # the executor has shut down (the loop is closing)
            for _, finished in trip:
                if not finished.done():
                    finished.set_exception(exc)
            return
        self._out = True
        future.add_done_callback(lambda done: self._back(trip, done))

    def _back(
        self,
        trip: list[tuple[Lookup, asyncio.Future[Found]]],
        done: asyncio.Future[list[Answer]],
    ) -> None:
        self._out = False
        error = None if done.cancelled() else done.exception()
        for index, (_, finished) in enumerate(trip):
            if finished.done():  # its invite was cancelled (the socket closed)
                continue
            if done.cancelled():
                finished.cancel()
            elif error is not None:
                finished.set_exception(error)
            else:
                answer = done.result()[index]
                if isinstance(answer, Exception):
                    finished.set_exception(answer)
                else:
                    finished.set_result(answer)
        if self._waiting:
            self._start()
