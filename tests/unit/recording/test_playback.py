"""Playback tickets (recording/playback.py): bound to one recording, expiring, unforgeable, keyed
from the master key; first use noticed once; decoded audio kept within its bounds."""

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


def test_first_use_is_noticed_once_per_ticket() -> None:
    used = playback.FirstUse()
    one, two = playback.mint(RID, "cleo", now=0), playback.mint(RID, "cleo", now=0)
    assert used.first(one, now=1) and not used.first(one, now=2) and used.first(two, now=2)


def test_the_decoded_cache_keeps_few_and_bounded() -> None:
    cache = playback.DecodedCache(entries=2, max_bytes=10)
    decodes: list[str] = []

    def decode(name: str, size: int) -> bytes:
        decodes.append(name)
        return b"x" * size

    assert cache.get("a", lambda: decode("a", 4)) == b"xxxx"
    cache.get("a", lambda: decode("a", 4))
    cache.get("b", lambda: decode("b", 4))
    cache.get("c", lambda: decode("c", 4))  # two entries at most: a goes
    cache.get("a", lambda: decode("a", 4))
    cache.get("big", lambda: decode("big", 11))  # larger than the bound: never kept
    cache.get("big", lambda: decode("big", 11))
    assert decodes == ["a", "b", "c", "a", "big", "big"]
