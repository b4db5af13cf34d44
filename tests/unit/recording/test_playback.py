"""Playback tickets (recording/playback.py): bound to one recording, expiring, unforgeable, keyed
from the master key, strict base64url; uses noticed per address; a rate per ticket; RFC 9110
byte ranges."""

from __future__ import annotations

import pytest

from callgate.recording import playback

MASTER = bytes(range(32))
RID = "f" * 32


def test_a_ticket_opens_one_recording_until_it_expires() -> None:
    key = playback.ticket_key(MASTER)
    ticket = playback.mint(RID, "cleo", now=1000)
    text = playback.encode(key, ticket)
    assert playback.verify(key, text, RID, now=1000 + playback.TICKET_SECONDS - 1) == ticket
    with pytest.raises(playback.TicketError, match="expired"):
        playback.verify(key, text, RID, now=1000 + playback.TICKET_SECONDS)
    with pytest.raises(playback.TicketError, match="another recording"):
        playback.verify(key, text, "e" * 32, now=1000)
    other_key = playback.ticket_key(bytes(32))  # another server's master key
    with pytest.raises(playback.TicketError, match="not genuine"):
        playback.verify(other_key, text, RID, now=1000)
    for bad in ("", "abc", "a.b.c", "!!.!!", "x" * 600 + ".y"):
        with pytest.raises(playback.TicketError):
            playback.verify(key, bad, RID, now=1000)


def test_a_ticket_is_strict_base64url() -> None:
    key = playback.ticket_key(MASTER)
    text = playback.encode(key, playback.mint(RID, "cleo", now=1000))
    body, mac = text.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelt = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]  # same bytes, unused bits set
    for bad in (f"{body}.{respelt}", f"{body}.{mac}=", f"{body}.{mac[:5]} {mac[5:]}",
                f"{body}.{mac[:5]}+{mac[6:]}", f"{body}!.{mac}"):  # fmt: skip
        with pytest.raises(playback.TicketError, match="malformed"):
            playback.verify(key, bad, RID, now=1000)


def test_uses_are_marked_per_address_only_when_told() -> None:
    uses = playback.Uses()
    one, two = playback.mint(RID, "cleo", now=0), playback.mint(RID, "cleo", now=0)
    assert not uses.known(one, "10.0.0.1", now=1)  # not marked yet (its audit entry failed)
    assert not uses.known(one, "10.0.0.1", now=2) and uses.first_address(one)
    uses.mark(one, "10.0.0.1")
    assert uses.known(one, "10.0.0.1", now=3) and not uses.known(two, "10.0.0.1", now=3)
    assert not uses.known(one, "10.0.0.2", now=3) and not uses.first_address(one)
    assert not uses.known(one, "10.0.0.1", now=one.expires)  # forgotten once expired


def test_a_ticket_gets_a_burst_then_a_steady_rate() -> None:
    rate = playback.StreamRate(burst=3, rate=2.0)
    one, two = playback.mint(RID, "cleo", now=0), playback.mint(RID, "cleo", now=0)
    assert [rate.take(one, now=10) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.take(one, now=10) == pytest.approx(0.5)
    assert rate.take(two, now=10) == 0.0  # each ticket its own
    assert rate.take(one, now=10.5) == 0.0 and rate.take(one, now=10.5) > 0


def test_log_lines_are_limited_and_the_rest_counted() -> None:
    limit = playback.LogLimit(count=2, period=60)
    assert [limit.allow(now=t) for t in (0, 1, 2, 3)] == [True, True, False, False]
    assert limit.allow(now=61) and limit.held_back() == 2 and limit.held_back() == 0


@pytest.mark.parametrize(
    ("header", "wanted"),
    [
        (None, None),
        ("bytes=0-43", (0, 43)),
        ("Bytes=0-1", (0, 1)),  # the unit is case-insensitive (RFC 9110 §14.1)
        ("BYTES=5-", (5, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-500", (0, 99)),
        (" bytes=1-2 ", (1, 2)),
        ("bytes=100-", "unsatisfiable"),
        ("bytes=-0", "unsatisfiable"),
        ("bytes=-", None),  # invalid syntax: ignored (§14.2), not 416
        ("bytes=5-3", None),
        ("bytes=0-1,3-4", None),  # one range only
        ("items=0-1", None),
        ("bytes=0-" + "9" * 300, None),  # over-long
        ("bytes=a-b", None),
    ],
)
def test_byte_ranges_follow_rfc_9110(
    header: str | None, wanted: tuple[int, int] | str | None
) -> None:
    assert playback.byte_range(header, 100) == wanted
