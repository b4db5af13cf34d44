"""`FindingsFeed`: what the console's "Unmanaged calling" long polls wait on. A poll returns the
moment this server's monitor stores a finding, within a recheck when another node changed the
table, at its deadline otherwise, and at once beyond the cap on polls held."""

from __future__ import annotations

import asyncio
import threading

import pytest

from callgate.api.routes import findings
from callgate.api.routes.findings import FindingsFeed


class Table:
    """A findings table's version, written from another thread as the monitor's is."""

    def __init__(self) -> None:
        self.value = "1.1.0.10"
        self.reads = 0

    def version(self) -> str:
        self.reads += 1
        return self.value


def test_a_long_poll_wakes_on_a_local_store_at_once() -> None:
    async def scenario() -> tuple[bool, int]:
        table = Table()
        feed = FindingsFeed(asyncio.get_running_loop(), table.version)
        before = await feed.version()
        waiting = asyncio.create_task(feed.wait(before, 20))
        await asyncio.sleep(0.05)
        assert not waiting.done() and feed.waiters == 1

        def store() -> None:  # the monitor's thread
            table.value = "2.2.5.20"
            feed.bump()

        threading.Thread(target=store).start()
        await asyncio.wait_for(waiting, 10)  # well before the 20 s deadline or a recheck count
        return await feed.version() != before, feed.waiters

    assert asyncio.run(scenario()) == (True, 0)


def test_another_nodes_write_is_seen_by_the_recheck_and_reads_are_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(findings, "RECHECK_S", 0.05)

    async def scenario() -> tuple[int, float]:
        table = Table()
        loop = asyncio.get_running_loop()
        started = loop.time()
        feed = FindingsFeed(loop, table.version)
        before = await feed.version()
        polls = [asyncio.create_task(feed.wait(before, 20)) for _ in range(10)]
        await asyncio.sleep(0.3)
        assert not any(p.done() for p in polls)
        table.value = "2.2.5.20"  # no bump: written by another server
        await asyncio.wait_for(asyncio.gather(*polls), 10)
        return table.reads, loop.time() - started

    reads, elapsed = asyncio.run(scenario())
    # ten polls, one shared read per recheck period (not one per poll), whatever the pace
    assert reads <= elapsed / 0.05 + 2


def test_a_poll_ends_at_its_deadline_and_beyond_the_cap_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(findings, "MAX_WAITERS", 2)

    async def scenario() -> None:
        feed = FindingsFeed(asyncio.get_running_loop(), Table().version)
        before = await feed.version()
        held = [asyncio.create_task(feed.wait(before, 20)) for _ in range(2)]
        await asyncio.sleep(0.05)
        await asyncio.wait_for(feed.wait(before, 20), 5)  # a third: answered at once
        await asyncio.wait_for(feed.wait(before, 0.1), 5)  # … as is a short one
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        assert feed.waiters == 0
        await asyncio.wait_for(feed.wait(before, 0.1), 5)  # nothing changed: the deadline

    asyncio.run(scenario())


def test_a_store_during_the_version_read_is_not_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(findings, "RECHECK_S", 60.0)  # only the bump can end the wait in time

    async def scenario() -> None:
        table = Table()
        feed = FindingsFeed(asyncio.get_running_loop(), table.version)
        before = await feed.version()
        stale_read = table.version

        def racing() -> str:  # the monitor commits and bumps while this read is under way
            seen = stale_read()
            table.value = "2.2.5.20"
            feed.bump()
            return seen

        feed._read = racing  # the read the feed was built with, now overtaken by a store
        feed.bump()  # something was stored: the next version() reads again
        await asyncio.wait_for(feed.wait(before, 20), 10)

    asyncio.run(scenario())
