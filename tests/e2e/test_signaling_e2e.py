"""Call control through the real server with SDK clients and no media: every way a call ends.

`SignalingClient` speaks protocol v1 to `callgate serve`; the offer is a real aiortc offer. Each
test checks what both people's devices are told (`call.ended` reason and `ended_by`) and the CDR
row the call leaves (disposition, ended_by, reason, times).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from callgate.client.errors import SignalingError
from callgate.client.signaling import SignalingClient
from tests.e2e.helpers import (
    Serve,
    cdr_row,
    connected,
    final_cdr,
    next_of,
    no_event,
)

# Short call timeouts, so the watchdog tests below finish in seconds: this module's calls carry no
# media (the tests report it), so nothing on a loaded machine has to beat them but the tests' own
# requests. (tests/e2e/conftest.py gives the module's server these.)
RING_TIMEOUT = 3.0
SETUP_TIMEOUT = 5.0
SILENCE_TIMEOUT = 4.0
SERVE_ENV_OVERRIDES = {
    "CALLGATE_CALLS__RING_TIMEOUT": str(RING_TIMEOUT),
    "CALLGATE_CALLS__SETUP_TIMEOUT": str(SETUP_TIMEOUT),
    "CALLGATE_CALLS__SILENCE_TIMEOUT": str(SILENCE_TIMEOUT),
}

pytestmark = pytest.mark.timeout(
    120
)  # a module's server starts inside its first test: a busy machine needs time, not luck


async def invite(caller: SignalingClient, to: str, sdp: str) -> str:
    ack = await caller.request("call.invite", to=to, sdp=sdp)
    assert ack["type"] == "ack" and isinstance(ack["call_id"], str), ack
    return str(ack["call_id"])


async def ring(caller: SignalingClient, callees: list[SignalingClient], to: str, sdp: str) -> str:
    """Invite `to`; every callee device hears `call.incoming`, the caller `call.ringing`."""
    call_id = await invite(caller, to, sdp)
    ringing = await next_of(caller, "call.ringing", call_id)
    assert ringing["devices"] == len(callees), ringing
    for callee in callees:
        incoming = await next_of(callee, "call.incoming", call_id)
        assert incoming["from"]["handle"] == caller.hello["user"]["handle"], incoming
        assert incoming["sdp"].startswith("v=0"), incoming
    return call_id


async def answered_call(
    caller: SignalingClient, callee: SignalingClient, to: str, offer: str, answer: str
) -> str:
    call_id = await ring(caller, [callee], to, offer)
    assert (await callee.request("call.answer", call_id=call_id, sdp=answer))["type"] == "ack"
    assert (await next_of(caller, "call.answered", call_id))["sdp"].startswith("v=0")
    return call_id


async def ended(client: SignalingClient, call_id: str, timeout: float = 20.0) -> tuple[str, str]:
    event = await next_of(client, "call.ended", call_id, timeout=timeout)
    return event["reason"], event["ended_by"]


async def record(serve: Serve, call_id: str) -> dict[str, Any]:
    row = await final_cdr(serve.database, call_id)
    assert row["invite_at"] is not None and row["invite_at"] <= row["end_at"]
    return row


def outcome(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["disposition"], row["ended_by"], row["reason"]


async def test_reject_ends_the_call_for_both_and_is_recorded(serve: Serve, offer_sdp: str) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        call_id = await ring(alice, [bob], "bob", offer_sdp)
        ack = await bob.request("call.reject", call_id=call_id, reason="in a meeting")
        assert ack["type"] == "ack"
        assert await ended(alice, call_id) == ("rejected", "callee")
        assert await ended(bob, call_id) == ("rejected", "callee")
        row = await record(serve, call_id)
    assert outcome(row) == ("rejected", "callee", "rejected")
    assert row["caller_user"] == "alice" and row["callee_user"] == "bob"
    assert row["ring_at"] is not None and row["answer_at"] is None
    assert row["callee_device"] is None and row["duration_s"] is None


async def test_reject_reason_is_kept_in_the_cdr(serve: Serve, offer_sdp: str) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        call_id = await ring(alice, [bob], "bob", offer_sdp)
        await bob.request("call.reject", call_id=call_id, reason="in a meeting until 3")
        await ended(alice, call_id)
        row = await record(serve, call_id)
    assert "in a meeting until 3" in json.dumps(row, default=str)


async def test_busy_when_the_callee_is_in_another_call(
    serve: Serve, offer_sdp: str, answer_sdp: str
) -> None:
    async with (
        connected(serve, "alice") as alice,
        connected(serve, "bob") as bob,
        connected(serve, "carol") as carol,
    ):
        first = await answered_call(carol, bob, "bob", offer_sdp, answer_sdp)
        call_id = await invite(alice, "bob", offer_sdp)
        assert await ended(alice, call_id) == ("busy", "server")
        await no_event(bob)  # bob's device never rang for alice
        row = await record(serve, call_id)
        # carol ↔ bob goes on: bob can still hang it up normally
        await bob.request("call.hangup", call_id=first)
        assert await ended(carol, first) == ("hangup", "callee")
    assert outcome(row) == ("busy", "server", "busy")
    assert row["ring_at"] is None and row["answer_at"] is None
    assert outcome(await record(serve, first)) == ("answered", "callee", "hangup")


async def test_busy_while_the_callee_is_ringing_for_someone_else(
    serve: Serve, offer_sdp: str
) -> None:
    async with (
        connected(serve, "alice") as alice,
        connected(serve, "bob") as bob,
        connected(serve, "carol") as carol,
    ):
        first = await ring(carol, [bob], "bob", offer_sdp)
        call_id = await invite(alice, "bob", offer_sdp)
        assert await ended(alice, call_id) == ("busy", "server")
        await carol.request("call.hangup", call_id=first)
        assert await ended(bob, first) == ("cancelled", "caller")
    assert outcome(await record(serve, call_id)) == ("busy", "server", "busy")


async def test_cancel_while_ringing(serve: Serve, offer_sdp: str) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        call_id = await ring(alice, [bob], "bob", offer_sdp)
        assert (await alice.request("call.hangup", call_id=call_id))["type"] == "ack"
        assert await ended(alice, call_id) == ("cancelled", "caller")
        assert await ended(bob, call_id) == ("cancelled", "caller")
        row = await record(serve, call_id)
    assert outcome(row) == ("cancelled", "caller", "cancelled")
    assert row["answer_at"] is None


async def test_no_answer_after_the_ring_timeout(serve: Serve, offer_sdp: str) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        started = time.monotonic()
        call_id = await ring(alice, [bob], "bob", offer_sdp)
        assert await ended(alice, call_id, timeout=RING_TIMEOUT + 20) == ("no-answer", "server")
        waited = time.monotonic() - started
        assert await ended(bob, call_id, timeout=20) == ("no-answer", "server")
        row = await record(serve, call_id)
    # not before the timeout; how late after it depends on the machine's load, so no upper bound
    assert waited >= RING_TIMEOUT - 0.3, waited
    assert outcome(row) == ("no-answer", "server", "no-answer")


async def test_unknown_and_offline_callees_fail_at_once_with_a_record(
    serve: Serve, offer_sdp: str
) -> None:
    async with connected(serve, "alice") as alice:
        unknown = await invite(alice, "nobody-here", offer_sdp)
        assert await ended(alice, unknown, timeout=15) == ("unknown-user", "server")
        offline = await invite(alice, "carol", offer_sdp)  # carol has no device online
        assert await ended(alice, offline, timeout=15) == ("offline", "server")
        rows = [await record(serve, unknown), await record(serve, offline)]
    assert outcome(rows[0]) == ("failed", "server", "unknown-user")
    assert rows[0]["callee_user"] == "nobody-here"
    assert outcome(rows[1]) == ("failed", "server", "offline")
    assert rows[1]["callee_user"] == "carol"


async def test_calling_yourself_or_a_second_call_from_a_busy_device_is_refused(
    serve: Serve, offer_sdp: str
) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        with pytest.raises(SignalingError) as self_call:
            await alice.request("call.invite", to="alice", sdp=offer_sdp)
        assert self_call.value.code == "bad-request"
        call_id = await ring(alice, [bob], "bob", offer_sdp)
        with pytest.raises(SignalingError) as second:
            await alice.request("call.invite", to="carol", sdp=offer_sdp)
        assert second.value.code == "conflict"
        await alice.request("call.hangup", call_id=call_id)
        await ended(bob, call_id)


async def test_multiple_devices_ring_and_the_first_answer_wins(
    serve: Serve, offer_sdp: str, answer_sdp: str
) -> None:
    async with (
        connected(serve, "alice") as alice,
        connected(serve, "bob", "desk") as desk,
        connected(serve, "bob", "phone") as phone,
    ):
        assert desk.hello["device_id"] != phone.hello["device_id"]
        call_id = await ring(alice, [desk, phone], "bob", offer_sdp)
        await desk.request("call.answer", call_id=call_id, sdp=answer_sdp)
        assert await ended(phone, call_id) == ("answered-elsewhere", "callee")
        await next_of(alice, "call.answered", call_id)
        with pytest.raises(SignalingError) as late:
            await phone.request("call.answer", call_id=call_id, sdp=answer_sdp)
        assert late.value.code == "conflict"
        with pytest.raises(SignalingError) as other_device:
            await phone.request("call.hangup", call_id=call_id)
        assert other_device.value.code == "conflict"
        await alice.request("call.hangup", call_id=call_id)
        assert await ended(desk, call_id) == ("hangup", "caller")
        await no_event(phone)  # exactly one call.ended per device
        row = await record(serve, call_id)
    assert outcome(row) == ("answered", "caller", "hangup")
    assert row["callee_device"] == desk.hello["device_id"]


async def test_a_ringing_device_going_away_updates_the_count_then_the_last_ends_the_call(
    serve: Serve, offer_sdp: str
) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob", "desk") as desk:
        async with connected(serve, "bob", "phone") as phone:
            call_id = await ring(alice, [desk, phone], "bob", offer_sdp)
        assert (await next_of(alice, "call.ringing", call_id))["devices"] == 1
        await desk.close()
        assert await ended(alice, call_id) == ("callee-disconnected", "callee")
        row = await record(serve, call_id)
    assert outcome(row) == ("failed", "callee", "callee-disconnected")


async def test_hangup_by_the_callee(serve: Serve, offer_sdp: str, answer_sdp: str) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        started = time.monotonic()
        call_id = await answered_call(alice, bob, "bob", offer_sdp, answer_sdp)
        assert (await bob.request("call.hangup", call_id=call_id))["type"] == "ack"
        assert await ended(alice, call_id) == ("hangup", "callee")
        lasted = time.monotonic() - started  # an upper bound of the call's true duration
        assert await ended(bob, call_id) == ("hangup", "callee")
        row = await record(serve, call_id)
    assert outcome(row) == ("answered", "callee", "hangup")
    assert row["answer_at"] is not None and row["duration_s"] is not None
    assert 0 <= row["duration_s"] <= lasted + 0.01


@pytest.mark.parametrize("who", ["callee", "caller"])
async def test_a_party_socket_closing_mid_call_ends_it(
    serve: Serve, offer_sdp: str, answer_sdp: str, who: str
) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        call_id = await answered_call(alice, bob, "bob", offer_sdp, answer_sdp)
        gone, other = (bob, alice) if who == "callee" else (alice, bob)
        await gone.close()
        assert await ended(other, call_id, timeout=15) == (f"{who}-disconnected", who)
        row = await record(serve, call_id)
    assert outcome(row) == ("answered", who, f"{who}-disconnected")


async def test_setup_failed_when_no_media_is_reported_after_answer(
    serve: Serve, offer_sdp: str, answer_sdp: str
) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        call_id = await ring(alice, [bob], "bob", offer_sdp)
        before_answer = time.monotonic()  # the server's setup timer starts after this
        assert (await bob.request("call.answer", call_id=call_id, sdp=answer_sdp))["type"] == "ack"
        await next_of(alice, "call.answered", call_id)
        # only one side reaches media: still not a call
        await alice.request("call.media", call_id=call_id, state="connected")
        reason = await ended(alice, call_id, timeout=SETUP_TIMEOUT + 30)
        waited = time.monotonic() - before_answer
        assert reason == ("setup-failed", "server")
        assert await ended(bob, call_id, timeout=15) == ("setup-failed", "server")
        row = await record(serve, call_id)
    # not before the timeout; how late after it depends on the machine's load: no upper bound
    assert waited >= SETUP_TIMEOUT - 0.5, waited
    assert outcome(row) == ("failed", "server", "setup-failed")


async def test_media_lost_when_no_packets_arrive_for_the_silence_timeout(
    serve: Serve, offer_sdp: str, answer_sdp: str
) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        call_id = await answered_call(alice, bob, "bob", offer_sdp, answer_sdp)
        before_media = time.monotonic()  # the silence watchdog starts after this (both report)
        for client in (alice, bob):
            await client.request(
                "call.media", call_id=call_id, state="connected",
                local_candidate_type="relay", remote_candidate_type="relay", codec="opus",
            )  # fmt: skip
        reason = await ended(alice, call_id, timeout=SILENCE_TIMEOUT + 30)
        waited = time.monotonic() - before_media
        assert reason == ("media-lost", "server")
        row = await record(serve, call_id)
    # not before the timeout; how late after it depends on the machine's load: no upper bound
    assert waited >= SILENCE_TIMEOUT - 0.5, waited
    assert outcome(row) == ("answered", "server", "media-lost")
    assert row["media_path"] == "relay/relay" and row["codec"] == "opus"


async def test_cdr_row_exists_while_the_call_rings(serve: Serve, offer_sdp: str) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        call_id = await ring(alice, [bob], "bob", offer_sdp)
        row = cdr_row(serve.database, call_id)
        assert row is not None and row["end_at"] is None and row["ring_at"] is not None
        await alice.request("call.hangup", call_id=call_id)
        await ended(bob, call_id)


async def test_hello_points_only_at_our_relay_and_the_relay_only_policy_strips_other_paths(
    serve: Serve, offer_sdp: str, answer_sdp: str
) -> None:
    async with connected(serve, "alice") as alice, connected(serve, "bob") as bob:
        hello = alice.hello
        assert hello["protocol"] == 1 and hello["user"]["handle"] == "alice"
        assert hello["ice_transport_policy"] == "relay"
        assert hello["limits"] == {"max_message_bytes": 65536, "max_sdp_bytes": 16384}
        urls = [url for server in hello["ice_servers"] for url in _as_list(server["urls"])]
        assert urls and all(f"127.0.0.1:{serve.turn_port}" in url for url in urls), urls
        assert any(url.startswith("turn:") for url in urls), urls
        turn = next(s for s in hello["ice_servers"] if "turn:" in str(s["urls"]))
        assert turn["username"].endswith(":alice") and turn["credential"], turn

        host_ips = {
            line.split()[4] for line in offer_sdp.splitlines() if line.startswith("a=candidate:")
        }
        assert host_ips, "the aiortc offer has host candidates to strip"
        call_id = await invite(alice, "bob", offer_sdp)
        incoming = await next_of(bob, "call.incoming", call_id)
        assert "typ host" not in incoming["sdp"]
        assert not any(ip in incoming["sdp"] for ip in host_ips), incoming["sdp"]
        assert "a=fingerprint:sha-256" in incoming["sdp"]  # the rest is kept

        await bob.request("call.answer", call_id=call_id, sdp=answer_sdp)
        await next_of(alice, "call.answered", call_id)
        low, _ = serve.relay_ports
        ours = f"candidate:1 1 udp 16777215 127.0.0.1 {low} typ relay raddr 0.0.0.0 rport 0"
        foreign = f"candidate:2 1 udp 16777215 198.51.100.7 {low} typ relay raddr 0.0.0.0 rport 0"
        host = "candidate:3 1 udp 2130706431 10.1.2.3 5000 typ host"
        for text, forwarded in ((host, False), (foreign, False), (ours, True)):
            ack = await alice.request(
                "call.candidate", call_id=call_id, candidate={"candidate": text, "sdpMid": "0"}
            )
            assert ack["forwarded"] is forwarded, (text, ack)
        assert (await next_of(bob, "call.candidate", call_id))["candidate"]["candidate"] == ours
        await no_event(bob, 0.2)  # the other two never reached bob
        await alice.request("call.hangup", call_id=call_id)
        await ended(bob, call_id)


def _as_list(urls: str | list[str]) -> list[str]:
    return [urls] if isinstance(urls, str) else list(urls)
