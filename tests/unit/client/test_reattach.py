"""A softphone whose node died takes its call back (client/softphone.py): connecting to a server
being killed fails as a SignalingError (not an exception that silently stops the call's event
loop), and re-attaching retries, with a growing pause, until a server answers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

import pytest

from callgate.client import softphone
from callgate.client.call import CallSession
from callgate.client.errors import SignalingError
from callgate.client.signaling import SignalingChannel, SignalingClient


async def test_a_listener_closed_mid_handshake_is_a_signaling_error() -> None:
    # what a killed server looks like for an instant: the kernel accepted the connection, then
    # the listener closes and the connection is reset before any HTTP answer
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    attempt = asyncio.create_task(SignalingClient.connect(f"http://127.0.0.1:{port}", "t", "d"))
    await asyncio.sleep(0.2)  # the connection waits in the listener's queue
    listener.close()
    with pytest.raises(SignalingError) as caught:
        await asyncio.wait_for(attempt, 10)
    assert caught.value.code == "closed"


class _Session:
    """What `_reattach` uses of a CallSession."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.reattached: list[object] = []

    async def reattach(self, channel: object, within: float) -> dict[str, Any]:
        self.reattached.append(channel)
        return {"state": "connected"}


async def test_reattach_retries_until_a_server_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        pauses.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(softphone.asyncio, "sleep", sleep)
    channel = object()
    attempts = 0

    async def reconnect() -> SignalingChannel:
        nonlocal attempts
        attempts += 1
        if attempts < 6:
            raise SignalingError("closed", "no server answers")
        return cast(SignalingChannel, channel)

    session = _Session()
    moved = await softphone._reattach(cast(CallSession, session), reconnect)
    assert moved is channel and session.reattached == [channel]
    assert pauses == [0.5, 1.0, 2.0, 4.0, 4.0]  # doubling, bounded


async def test_reattach_gives_up_once_the_call_ended() -> None:
    session = _Session()

    async def reconnect() -> SignalingChannel:
        session.ended.set()  # e.g. Ctrl-C while no server answers
        raise SignalingError("closed", "no server answers")

    assert await softphone._reattach(cast(CallSession, session), reconnect) is None
    assert session.reattached == []
