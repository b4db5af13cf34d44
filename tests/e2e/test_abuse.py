"""Abuse of the signaling and HTTP surfaces of a running `callgate serve`: every bad input is
refused, the offending connection stays usable, and everyone else's call goes on.

carol is the abuser; alice ↔ bob keep a call up meanwhile (media reported, stats flowing so the
silence watchdog stays quiet) and must hang it up normally at the end of each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callgate.client.errors import SignalingError
from callgate.client.signaling import SignalingClient
from tests.e2e.helpers import (
    Serve,
    cdr_row,
    connected,
    final_cdr,
    http_json,
    login,
    next_of,
    no_event,
    password_of,
    raw_request,
)

pytestmark = pytest.mark.timeout(
    120
)  # a module's server starts inside its first test: a busy machine needs time, not luck


@dataclass
class Bystanders:
    """alice ↔ bob in an answered call with media, reporting stats every 0.5 s."""

    alice: SignalingClient
    bob: SignalingClient
    call_id: str
    stats_sent: int = 0
    errors: list[str] = field(default_factory=list)

    async def keep_talking(self) -> None:
        packets = 0
        while True:
            packets += 25
            streams = [
                {"kind": "audio", "direction": d, "packets": packets, "packets_lost": 0,
                 "jitter_ms": 2.0, "rtt_ms": 1.0}
                for d in ("inbound", "outbound")
            ]  # fmt: skip
            for client in (self.alice, self.bob):
                try:
                    await client.request("call.stats", call_id=self.call_id, streams=streams)
                    self.stats_sent += 1
                except SignalingError as exc:
                    self.errors.append(f"{exc.code}: {exc.message}")
            await asyncio.sleep(0.5)

    async def still_talking(self) -> None:
        """Candidates still flow both ways, and nobody has heard of an end."""
        candidate = {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}
        ack = await self.alice.request("call.candidate", call_id=self.call_id, candidate=candidate)
        assert ack["forwarded"] is True
        assert (await next_of(self.bob, "call.candidate", self.call_id))["candidate"] == candidate
        await self.bob.request("call.candidate", call_id=self.call_id, candidate=candidate)
        await next_of(self.alice, "call.candidate", self.call_id)


@pytest.fixture
async def bystanders(serve: Serve, offer_sdp: str, answer_sdp: str) -> AsyncIterator[Bystanders]:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        call_id = (await alice.request("call.invite", to="bob", sdp=offer_sdp))["call_id"]
        await next_of(bob, "call.incoming", call_id)
        await bob.request("call.answer", call_id=call_id, sdp=answer_sdp)
        await next_of(alice, "call.answered", call_id)
        for client in (alice, bob):
            await client.request("call.media", call_id=call_id, state="connected")
        pair = Bystanders(alice, bob, call_id)
        talker = asyncio.create_task(pair.keep_talking())
        try:
            yield pair
            await pair.still_talking()
            talker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await talker
            assert pair.errors == [] and pair.stats_sent > 0
            await alice.request("call.hangup", call_id=call_id)
            assert (await next_of(bob, "call.ended", call_id))["reason"] == "hangup"
        finally:
            talker.cancel()
    row = await final_cdr(serve.database, call_id)
    assert (row["disposition"], row["ended_by"], row["reason"]) == ("answered", "caller", "hangup")


async def ws_attempt(url: str) -> tuple[int | None, int | None, list[str]]:
    """Open a raw WebSocket; (HTTP status if refused at handshake, close code, messages seen)."""
    messages: list[str] = []
    try:
        async with ws_connect(url, open_timeout=30, proxy=None) as ws:
            try:
                while True:
                    messages.append(str(await asyncio.wait_for(ws.recv(), 30)))
            except ConnectionClosed as exc:
                return None, exc.rcvd.code if exc.rcvd else None, messages
    except InvalidStatus as exc:
        return exc.response.status_code, None, messages


# ---- authentication ----


async def test_bad_revoked_and_missing_tokens_are_refused_before_any_message(
    serve: Serve, bystanders: Bystanders
) -> None:
    base = f"ws://127.0.0.1:{serve.http_port}/ws"
    token = await login(serve, "carol")
    status, _ = http_json(f"{serve.url}/api/logout", body={}, token=token)
    assert status == 204
    for url in (f"{base}?token=not-a-token&device=x", f"{base}?token={token}", base):
        # accepted, then closed with 4401 (what a browser can see), nothing sent before
        assert await ws_attempt(url) == (None, 4401, []), url
    with pytest.raises(SignalingError) as refused:
        await SignalingClient.connect(serve.url, "not-a-token", "x", timeout=30)
    assert refused.value.code == "unauthorized"


async def test_api_calls_needs_a_valid_token(serve: Serve) -> None:
    assert http_json(f"{serve.url}/api/calls")[0] == 401
    assert http_json(f"{serve.url}/api/calls", token="not-a-token")[0] == 401
    token = await login(serve, "carol")
    status, body = http_json(f"{serve.url}/api/calls", token=token)
    assert status == 200 and isinstance(body["calls"], list)
    # a user sees only their own calls
    assert all("carol" in (c["caller_user"], c["callee_user"]) for c in body["calls"]), body


async def test_wrong_password_and_disabled_user_cannot_sign_in(serve: Serve) -> None:
    added = serve.cli("user", "add", "eve", "--password-stdin", stdin=password_of("eve") + "\n")
    assert added.returncode == 0, added.stderr
    login_url = f"{serve.url}/api/login"
    wrong = http_json(login_url, body={"handle": "carol", "password": "nope"})
    assert wrong == (401, {"detail": "invalid credentials"})
    status, body = http_json(login_url, body={"handle": "eve", "password": password_of("eve")})
    assert status == 200, body
    token = body["token"]
    assert serve.cli("user", "disable", "eve").returncode == 0
    refused = http_json(login_url, body={"handle": "eve", "password": password_of("eve")})
    assert refused == (401, {"detail": "invalid credentials"})
    # the token eve got before is no good either
    assert http_json(f"{serve.url}/api/calls", token=token)[0] == 401
    with pytest.raises(SignalingError) as ws_refused:
        await SignalingClient.connect(serve.url, token, "x", timeout=30)
    assert ws_refused.value.code == "unauthorized"


# ---- malformed and hostile messages ----


async def test_oversize_garbage_unknown_and_bad_fields_get_errors_and_the_socket_lives(
    serve: Serve, bystanders: Bystanders, offer_sdp: str
) -> None:
    async with connected(serve, "carol") as carol:
        huge = {"type": "ping", "id": "big", "pad": "x" * 70_000}
        reply = await raw_request(carol, json.dumps(huge))
        assert (reply["code"], reply["id"]) == ("too-large", None), reply
        assert (await carol.request("ping"))["type"] == "ack"

        big_sdp = offer_sdp + "a=x-pad:" + "y" * 17_000 + "\r\n"
        reply = await raw_request(
            carol, {"type": "call.invite", "id": "sdp1", "to": "bob", "sdp": big_sdp}
        )
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "too-large", "sdp1")

        for garbage in ("{not json", "[1, 2, 3]", '"a string"', "\x00\xff"):
            reply = await raw_request(carol, garbage)
            assert (reply["code"], reply["id"]) == ("bad-json", None), (garbage, reply)
        reply = await raw_request(carol, {"type": "call.teleport", "id": "u1"})
        assert (reply["code"], reply["id"]) == ("unknown-type", "u1"), reply

        bad_fields: list[dict[str, Any]] = [
            {"type": "call.invite", "id": "b1", "sdp": offer_sdp},  # no `to`
            {"type": "call.invite", "id": "b2", "to": "bob", "sdp": offer_sdp, "x": 1},
            {"type": "call.hangup", "id": "b3", "call_id": 42},
            {"type": "call.media", "id": "b4", "call_id": "c", "state": "dancing"},
            {"type": "call.candidate", "id": "b5", "call_id": "c",
             "candidate": {"candidate": "x" * 2000}},
            {"type": "call.stats", "id": "b6", "call_id": "c",
             "streams": [{"kind": "video", "direction": "inbound", "packets": 1,
                          "packets_lost": 0}]},
            {"id": "b7", "to": "bob"},  # no type
        ]  # fmt: skip
        for message in bad_fields:
            reply = await raw_request(carol, message)
            assert (reply["type"], reply["code"], reply["id"]) == (
                "error", "bad-request", message["id"],
            ), (message, reply)  # fmt: skip
            assert reply["message"], reply
        assert (await carol.request("ping"))["type"] == "ack"
        await no_event(carol)  # nothing else came back: one reply per message
    await no_event(bystanders.bob, 0.1)


async def test_acting_on_someone_elses_call_is_not_found_and_changes_nothing(
    serve: Serve, bystanders: Bystanders, answer_sdp: str
) -> None:
    call_id = bystanders.call_id
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ relay raddr 0.0.0.0 rport 0"}
    attempts: list[dict[str, Any]] = [
        {"type": "call.hangup", "call_id": call_id},
        {"type": "call.answer", "call_id": call_id, "sdp": answer_sdp},
        {"type": "call.candidate", "call_id": call_id, "candidate": candidate},
        {"type": "call.reject", "call_id": call_id},
        {"type": "call.media", "call_id": call_id, "state": "failed"},
        {"type": "call.stats", "call_id": call_id, "streams": []},
    ]
    async with connected(serve, "carol") as carol:
        for n, attempt in enumerate(attempts):
            reply = await raw_request(carol, {**attempt, "id": f"x{n}"})
            assert (reply["type"], reply["code"]) == ("error", "not-found"), (attempt, reply)
        # a made-up call id answers exactly the same: existence does not leak
        reply = await raw_request(carol, {"type": "call.hangup", "id": "y", "call_id": "f" * 32})
        assert (reply["code"], reply["message"]) == ("not-found", "no such call")
    for client in (bystanders.alice, bystanders.bob):
        await no_event(client, 0.2)  # no candidate, no end reached alice or bob
    row = cdr_row(serve.database, call_id)
    assert row is not None and row["end_at"] is None and row["answer_at"] is not None


FLOOD = 500


async def test_flooding_is_rate_limited_and_the_connection_recovers(
    serve: Serve, bystanders: Bystanders
) -> None:
    async with connected(serve, "carol") as carol:
        ws = carol._ws  # raw frames, as fast as the socket takes them
        # 500 at once: the bucket (100, refilled at 50/s) runs dry however slowly a loaded
        # server reads them (it would have to take 8 s over it)
        for n in range(FLOOD):
            await ws.send(json.dumps({"type": "ping", "id": f"f{n}"}))
        acked: set[str] = set()
        limited = 0
        while len(acked) + limited < FLOOD:
            event = await carol.next_event(timeout=30)
            if event["type"] == "ack":
                acked.add(event["id"])
            else:
                assert (event["type"], event["code"]) == ("error", "rate-limited"), event
                limited += 1
        assert limited > 0 and len(acked) >= 100, (len(acked), limited)
        await no_event(carol, 0.2)  # exactly one reply per message
        await asyncio.sleep(1.0)  # the bucket refills
        for _ in range(5):
            assert (await carol.request("ping"))["type"] == "ack"


async def test_abusive_clients_do_not_stop_another_users_call(
    serve: Serve, bystanders: Bystanders
) -> None:
    """All of it at once, from several sockets, while alice ↔ bob talk."""

    async def abuse(client: SignalingClient) -> None:
        ws = client._ws
        await ws.send(json.dumps({"type": "call.hangup", "id": "h", "call_id": bystanders.call_id}))
        await ws.send("z" * 70_000)
        for n in range(150):
            await ws.send(["{oops", json.dumps({"type": "nope", "id": f"n{n}"})][n % 2])

    async with connected(serve, "carol", "a") as one, connected(serve, "carol", "b") as two:
        await asyncio.gather(abuse(one), abuse(two))
        await asyncio.sleep(1.0)
        assert (await one.request("ping"))["type"] == "ack"
        assert (await two.request("ping"))["type"] == "ack"
    await no_event(bystanders.alice, 0.2)
    await no_event(bystanders.bob, 0.2)
