"""Shared fixtures for the end-to-end tests: one `callgate serve` per test module, a valid offer.

Each server gets a temporary data dir with alice, bob and carol (created with `callgate user add`
before it starts), free loopback ports, a private relay port range and short call timeouts. It is
stopped with SIGTERM at the end, and must exit 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Serve, new_serve, user_store


@pytest.fixture(scope="session")
def user_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the three users, made once; each server starts on a copy of it."""
    return user_store(tmp_path_factory.mktemp("users"))


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, user_template: Path) -> Iterator[Serve]:
    """One server per test module: a module's records (CDRs, relay sessions) are its own."""
    server = new_serve(tmp_path_factory.mktemp("serve"), template=user_template).start()
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"callgate serve exited {code} on SIGTERM:\n{server.log()}"
    assert "Traceback" not in server.log(), server.log()


async def _aiortc_offer() -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


@pytest.fixture(scope="session")
def offer_sdp() -> str:
    """A real audio offer from aiortc (host candidates only: the relay-only server strips them)."""
    return asyncio.run(_aiortc_offer())


@pytest.fixture(scope="session")
def answer_sdp(offer_sdp: str) -> str:
    """Good enough as an answer for signaling-only calls: the server filters but never parses
    the media sections' semantics."""
    return offer_sdp.replace("a=setup:actpass", "a=setup:active")


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
