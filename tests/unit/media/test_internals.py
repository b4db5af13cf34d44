"""The aiortc/aioice internals the anchor reaches into (media/internals.py): a release that
renames one, or a version outside the pinned range, is found at start, and then no leg is
anchored and no call that must be recorded connects, with `/healthz` and the log saying why —
instead of a recorded call that misbehaves mid-way."""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from callgate.media import internals

ROOT = Path(__file__).resolve().parents[3]


async def test_the_installed_releases_are_what_the_anchor_knows(tmp_path: Path) -> None:
    # checked as `serve` checks them at start (in a thread) and as a first leg would (on the
    # event loop's own thread): nothing found, calls can be recorded
    from callgate.config import Settings
    from callgate.runtime import _start_recordings
    from callgate.storage.db import open_store, sqlite_url

    assert internals.check() == []
    internals.problems.cache_clear()
    store = open_store(sqlite_url(tmp_path / "db.sqlite"))
    service = await _start_recordings(store, Settings(data_dir=tmp_path))
    store.close()
    assert service.available and internals.problems() == ()


def test_the_checked_range_is_the_one_pyproject_pins() -> None:
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, (lowest, below) in internals.VERSIONS.items():
        want = f"{name}>={'.'.join(map(str, lowest))},<{'.'.join(map(str, below))}"
        assert want in pins, (want, pins)


def test_a_missing_or_changed_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from aioice.turn import TurnTransport
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    # a release where the receiver's hook is gone, DTLS keeps its SRTP sessions elsewhere
    # and aioice queues its sends in a list
    monkeypatch.delattr(RTCRtpReceiver, "_handle_rtp_packet")
    dtls_init, turn_init = RTCDtlsTransport.__init__, TurnTransport.__init__

    def dtls(self: Any, *args: Any, **kwargs: Any) -> None:
        dtls_init(self, *args, **kwargs)
        del self._rx_srtp

    def turn(self: Any, *args: Any, **kwargs: Any) -> None:
        turn_init(self, *args, **kwargs)
        self._TurnTransport__send_tasks = []

    monkeypatch.setattr(RTCDtlsTransport, "__init__", dtls)
    monkeypatch.setattr(TurnTransport, "__init__", turn)
    assert internals.check() == [
        "RTCRtpReceiver has no _handle_rtp_packet",
        "RTCDtlsTransport has no _rx_srtp",
        "aioice TurnTransport._TurnTransport__send_tasks is not what the anchor expects",
    ]


def test_a_release_outside_the_pinned_range_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    found = {"aiortc": "1.17.0", "aioice": "0.13.2"}
    monkeypatch.setattr(internals, "version", found.__getitem__)
    assert internals.check() == [
        "aiortc 1.17.0 installed; the anchor was checked against >=1.16,<1.17"
    ]
    found["aiortc"], found["aioice"] = "1.16.1", "0.13rc1"
    assert internals.check() == [
        "aioice 0.13rc1 installed; the anchor was checked against >=0.13,<0.14"
    ]


async def test_changed_internals_fail_closed_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # `serve`'s start: the recording service is unavailable (a recorded call ends
    # `recording-unavailable` at `start`), /healthz is degraded naming the attribute, the log
    # says so, and a leg refuses to be built
    from callgate.api.app import create_app
    from callgate.config import Settings
    from callgate.media.anchor import AnchorError, AnchorLeg
    from callgate.recording.writer import RecordingFailure
    from callgate.runtime import _start_recordings
    from callgate.storage.db import open_store, sqlite_url

    monkeypatch.setattr(internals, "check", lambda: ["RTCRtpReceiver has no _handle_rtp_packet"])
    internals.problems.cache_clear()  # and again after: the real finding is computed anew
    try:
        store = open_store(sqlite_url(tmp_path / "db.sqlite"))
        settings = Settings(data_dir=tmp_path)
        with caplog.at_level(logging.ERROR, logger="callgate.media.internals"):
            service = await _start_recordings(store, settings)
        assert "media anchor disabled" in caplog.text and "_handle_rtp_packet" in caplog.text
        assert not service.available
        with pytest.raises(RecordingFailure, match="_handle_rtp_packet"):
            await service.start("e" * 32, {}, None, lambda reason: None)
        app = create_app(health=lambda: {"call_recording": service.health()})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            health = (await http.get("/healthz")).json()
        assert health["status"] == "degraded"
        assert "_handle_rtp_packet" in health["call_recording"]["error"]
        with pytest.raises(AnchorError, match="_handle_rtp_packet"):
            AnchorLeg("caller", [], lambda packet: None)
        store.close()
    finally:
        internals.problems.cache_clear()


def test_every_internal_of_the_per_packet_path_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import pylibsrtp
    from aioice.ice import CandidatePair
    from aioice.turn import TurnClientMixin
    from aiortc.rtcrtpsender import RTCRtpSender

    # a release where the nominated pair names its peer otherwise, the TURN client's handler
    # is renamed (asyncio's empty default would be wrapped instead), the SRTP session decrypts
    # under another name and the sender's RTCP timestamp pair is kept as floats
    monkeypatch.delattr(CandidatePair, "remote_addr")
    monkeypatch.delattr(TurnClientMixin, "datagram_received")
    monkeypatch.delattr(pylibsrtp.Session, "unprotect")
    init = RTCRtpSender.__init__

    def sender(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._RTCRtpSender__ntp_timestamp = 0.0

    monkeypatch.setattr(RTCRtpSender, "__init__", sender)
    assert internals.check() == [
        "RTCRtpSender._RTCRtpSender__ntp_timestamp is not what the anchor expects",
        "pylibsrtp Session has no unprotect",
        "aioice CandidatePair has no remote_addr",
        "aioice TURN client.datagram_received is not what the anchor expects",
    ]


def test_a_check_that_fails_is_a_finding_kept_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # An internal that became a property which raises, and package metadata that cannot be
    # read: before, the error escaped `problems()` uncached, so every leg ran the check again
    # (a thread and an event loop each) and failed with that error instead of AnchorError.
    from aioice.turn import TurnClientUdpProtocol

    from callgate.media.anchor import AnchorError, AnchorLeg

    def broken(self: Any) -> Any:
        raise RuntimeError("moved to the allocation")

    monkeypatch.setattr(TurnClientUdpProtocol, "_send", property(broken))
    assert internals.check() == [
        "aioice TURN client._send failed: RuntimeError: moved to the allocation"
    ]
    read = []

    def unreadable(name: str) -> str:
        read.append(name)
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "METADATA")

    monkeypatch.setattr(internals, "version", unreadable)
    internals.problems.cache_clear()
    try:
        for _ in range(3):
            with pytest.raises(AnchorError, match="checking aiortc/aioice internals failed"):
                AnchorLeg("caller", [], lambda packet: None)
        assert read == ["aiortc"]  # checked once
    finally:
        internals.problems.cache_clear()


def test_a_change_in_how_aiortc_starts_or_stops_its_rtcp_loops_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rtcp_reports.install replaces `_run_rtcp` on the instance: a release that starts the
    loop from the class (or stops it without awaiting its exit) must turn the anchor off, not
    run aiortc's loops beside ours or hang a leg's close."""
    from aiortc.rtcrtpreceiver import RTCRtpReceiver
    from aiortc.rtcrtpsender import RTCRtpSender

    async def send(self: Any, parameters: Any) -> None:
        self.task = asyncio.ensure_future(RTCRtpSender._run_rtcp(self))

    async def stop(self: Any) -> None:
        self._RTCRtpReceiver__rtcp_task.cancel()

    monkeypatch.setattr(RTCRtpSender, "send", send)
    monkeypatch.setattr(RTCRtpReceiver, "stop", stop)
    assert internals.check() == [
        "RTCRtpSender.send is not what the anchor expects",
        "RTCRtpReceiver.stop is not what the anchor expects",
    ]
