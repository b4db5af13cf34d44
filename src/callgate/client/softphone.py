"""Whole calls over a signaling channel: what `callgate call` and `callgate answer` run.

`place_call()` invites a handle and talks until the duration is over or the call ends;
`answer_calls()` waits for `call.incoming`, answers, talks, and returns after `count` calls.
Both feed the channel's server events to the CallSession and bound every wait: the server ends
calls that never reach media (`setup-failed`), but a client must not hang if the server is gone.
Before each call the server's STUN/TURN URLs are probed (`reach.reachable_hello`): aiortc uses only
the first TURN URL, so the first one this network can reach is put in front.

With `reconnect` (a way to open a new signaling connection: the CLI tries its configured server
URLs in turn), a call whose signaling connection is lost mid-call — its node died; the media goes
on — is taken back: a new connection, then `call.reattach` (docs/scaling.md, "When a node dies").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callgate.client.call import (
    REATTACH_PAUSE,
    REATTACH_WITHIN,
    CallSession,
    EventCallback,
    ignore_event,
)
from callgate.client.errors import SignalingError
from callgate.client.ice import call_hello
from callgate.client.reach import reachable_hello
from callgate.client.signaling import SignalingChannel

log = logging.getLogger(__name__)

Reconnect = Callable[[], Awaitable[SignalingChannel]]
SETUP_TIMEOUT = 20.0  # answered → media connected, on the client's side (the server's is 10 s)
REATTACH_BACKOFF = 4.0  # seconds: the longest pause between re-attach rounds
FAILED_GRACE = 3.0  # after reporting media failed, how long to wait for the server's call.ended


@dataclass(frozen=True, slots=True)
class MediaOptions:
    play: Path | None = None
    tone: float | None = None
    record: Path | None = None
    stats_interval: float = 2.0
    codec: str | None = None  # offer and accept only this audio codec ("opus", "pcmu", "pcma")


@dataclass(frozen=True, slots=True)
class CallResult:
    call_id: str | None
    connected: bool
    reason: str | None
    ended_by: str | None = None
    local_candidate_type: str | None = None
    remote_candidate_type: str | None = None
    codec: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Media was reached and the call ended by a hangup (either side's)."""
        return self.connected and self.reason == "hangup"


def _result(session: CallSession) -> CallResult:
    local, remote = session.candidate_types or (None, None)
    return CallResult(
        call_id=session.call_id,
        connected=session.connected.is_set(),
        reason=session.reason,
        ended_by=session.ended_by,
        local_candidate_type=local,
        remote_candidate_type=remote,
        codec=session.codec.name if session.codec else None,
    )


async def _wait_any(*events: asyncio.Event, within: float | None = None) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _pump(
    channel: SignalingChannel, session: CallSession, reconnect: Reconnect | None = None
) -> None:
    """Feed server events to the session until it ends; refuse other calls meanwhile. A lost
    connection ends the call, unless `reconnect` lets it be re-attached elsewhere. A failure
    here ends the call too (`client-error`): the softphone must not talk on, deaf, for ever."""
    try:
        await _feed(channel, session, reconnect)
    except Exception:
        log.exception("the call's event loop failed")
        await session.abort("client-error")


async def _feed(
    channel: SignalingChannel, session: CallSession, reconnect: Reconnect | None
) -> None:
    while not session.ended.is_set():
        try:
            event = await channel.next_event()
        except SignalingError as exc:
            moved = None
            if reconnect is not None and session.call_id is not None:
                moved = await _reattach(session, reconnect)
            if moved is None:
                await session.abort(f"signaling-{exc.code}")
                return
            channel = moved
            continue
        if event.get("type") == "call.incoming" and event.get("call_id") != session.call_id:
            with contextlib.suppress(SignalingError):
                await channel.request("call.reject", call_id=event.get("call_id"), reason="busy")
            continue
        await session.handle(event)


async def _reattach(session: CallSession, reconnect: Reconnect) -> SignalingChannel | None:
    """Connect again (to the same or another server) and take the call back; the new channel,
    or None when the call cannot be re-attached within REATTACH_WITHIN seconds. While no server
    answers (every URL tried), the pause between rounds doubles, up to REATTACH_BACKOFF."""
    deadline = time.monotonic() + REATTACH_WITHIN
    pause = REATTACH_PAUSE
    while not session.ended.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            channel = await reconnect()
        except SignalingError as exc:  # no server answers yet
            log.info("re-attach: no server answers (%s); again in %.1f s", exc, pause)
            await asyncio.sleep(min(pause, left))
            pause = min(2 * pause, REATTACH_BACKOFF)
            continue
        try:
            await session.reattach(channel, within=max(1.0, deadline - time.monotonic()))
        except SignalingError as exc:
            if exc.code != "closed":  # refused (the call ended meanwhile…): it is over
                return None
            continue  # that connection was lost too: another one
        return channel
    return None


async def converse(
    channel: SignalingChannel,
    session: CallSession,
    *,
    duration: float | None,
    stop: asyncio.Event,
    setup_timeout: float = SETUP_TIMEOUT,
    reconnect: Reconnect | None = None,
) -> CallResult:
    """Run an invited/accepted call to its end; hang up after `duration` s of media or on `stop`."""
    pump = asyncio.create_task(_pump(channel, session, reconnect), name="call-events")
    ended, failed = session.ended, session.media_failed
    try:
        await _wait_any(session.answered, ended, stop)
        if session.answered.is_set() and not ended.is_set() and not stop.is_set():
            await _wait_any(session.connected, failed, ended, stop, within=setup_timeout)
            if not (session.connected.is_set() or failed.is_set() or ended.is_set()):
                reason = "setup-timeout" if not stop.is_set() else None
                await session.hangup()
                session.reason = reason or session.reason
        if session.connected.is_set() and not ended.is_set():
            await _wait_any(ended, failed, stop, within=duration)
        if failed.is_set() and not ended.is_set():
            # we reported `call.media failed`: the server ends the call; give it a moment
            await _wait_any(ended, stop, within=FAILED_GRACE)
        if not ended.is_set():
            await session.hangup()
        return _result(session)
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await session.close()


async def place_call(
    channel: SignalingChannel,
    hello: Mapping[str, Any],
    to: str,
    media: MediaOptions,
    *,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    on_event: EventCallback = ignore_event,
    setup_timeout: float = SETUP_TIMEOUT,
    reconnect: Reconnect | None = None,
) -> CallResult:
    session = CallSession(
        channel,
        await reachable_hello(hello),
        play=media.play,
        tone=media.tone,
        record=media.record,
        stats_interval=media.stats_interval,
        on_event=on_event,
        codec=media.codec,
    )
    try:
        await session.invite(to)
    except SignalingError as exc:
        await session.close()
        on_event("ended", {"call_id": None, "reason": exc.code, "message": exc.message})
        return CallResult(None, False, exc.code, extra={"message": exc.message})
    return await converse(
        channel,
        session,
        duration=duration,
        stop=stop or asyncio.Event(),
        setup_timeout=setup_timeout,
        reconnect=reconnect,
    )


def _nth_path(path: Path | None, n: int) -> Path | None:
    """The recording file for the n-th answered call: FILE, then FILE-2.wav, FILE-3.wav, …"""
    if path is None or n == 1:
        return path
    return path.with_name(f"{path.stem}-{n}{path.suffix}")


async def answer_calls(
    channel: SignalingChannel,
    hello: Mapping[str, Any],
    media: MediaOptions,
    *,
    count: int | None = 1,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    on_event: EventCallback = ignore_event,
    setup_timeout: float = SETUP_TIMEOUT,
    reconnect: Reconnect | None = None,
) -> list[CallResult]:
    """Answer incoming calls one at a time; return after `count` answered calls (None: until stop)."""
    stop = stop or asyncio.Event()
    results: list[CallResult] = []
    while (count is None or len(results) < count) and not stop.is_set():
        next_event = asyncio.create_task(channel.next_event())
        await _wait_any(stop, _done_event(next_event))
        if not next_event.done():
            next_event.cancel()
            break
        try:
            event = next_event.result()
        except SignalingError as exc:
            on_event("disconnected", {"call_id": None, "reason": exc.code})
            break
        if event.get("type") == "call.ended":
            on_event("missed", {"call_id": event.get("call_id"), "reason": event.get("reason")})
            continue
        if event.get("type") != "call.incoming":
            continue
        on_event("incoming", {"call_id": event.get("call_id"), "from": event.get("from")})
        n = len(results) + 1
        session = CallSession(
            channel,
            await reachable_hello(call_hello(hello, event)),
            play=media.play,
            tone=media.tone,
            record=_nth_path(media.record, n),
            stats_interval=media.stats_interval,
            on_event=on_event,
            codec=media.codec,
        )
        try:
            await session.accept(event)
        except SignalingError as exc:  # e.g. answered on another device meanwhile
            await session.close()
            on_event("missed", {"call_id": event.get("call_id"), "reason": exc.code})
            continue
        results.append(
            await converse(
                channel,
                session,
                duration=duration,
                stop=stop,
                setup_timeout=setup_timeout,
                reconnect=reconnect,
            )
        )
        channel = session.signaling  # another connection if the call was re-attached
    return results


def _done_event(task: asyncio.Task[Any]) -> asyncio.Event:
    done = asyncio.Event()
    task.add_done_callback(lambda _: done.set())
    return done
