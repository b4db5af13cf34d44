"""The process's TURN server for bridges made without one (`use_local_turn`): set while a
server runs, cleared by what set it at shutdown, never a stale server for later bridges."""

from __future__ import annotations

from callgate.media import anchor


def _nowhere(server: object, client: object) -> None:
    return None


def _elsewhere(server: object, client: object) -> None:
    return None


def test_the_process_turn_server_is_forgotten_at_shutdown() -> None:
    forget = anchor.use_local_turn(_nowhere)
    try:
        assert anchor.Bridge(lambda: [])._local_turn is _nowhere
    finally:
        forget()
    assert anchor.Bridge(lambda: [])._local_turn is None


def test_forgetting_an_old_server_keeps_the_one_set_since() -> None:
    forget_old = anchor.use_local_turn(_nowhere)
    forget_new = anchor.use_local_turn(_elsewhere)
    try:
        forget_old()
        assert anchor.Bridge(lambda: [])._local_turn is _elsewhere
    finally:
        forget_new()
    assert anchor.Bridge(lambda: [])._local_turn is None
