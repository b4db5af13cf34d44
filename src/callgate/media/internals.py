"""The aiortc and aioice internals the anchor reaches into, checked once before it anchors.

The anchor's per-packet paths (srtp_path.py, packets.py) replace or read attributes that are
no public API of aiortc or aioice: name-mangled counters, private methods, a transport's queued
tasks. A release that renames one would not fail at import; it would fail, or worse quietly
misbehave, in the middle of a recorded call. So `problems()` checks, once (at `serve` start, and
before the first leg otherwise), that the installed versions are within the range this code was
written against (the same range pyproject.toml pins; a unit test holds them equal) and that every
attribute these modules touch exists with the shape they use, on real objects built the way a
leg builds them (no socket, no event loop). If any is not, the anchor refuses every leg
(`AnchorLeg` raises `AnchorError`), the recording service is unavailable (calls that must be
recorded end `recording-unavailable`, `/healthz` says why) and the log says which attribute.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib.metadata
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# [lowest, below) of each version this code was checked against: as pinned in pyproject.toml
VERSIONS = {"aiortc": ((1, 16), (1, 17)), "aioice": ((0, 13), (0, 14))}
version: Callable[[str], str] = importlib.metadata.version  # tests put another in its place


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits == part else -1)  # "1rc2": below any release
    return tuple(parts)


def _versions() -> list[str]:
    problems = []
    for name, (lowest, below) in VERSIONS.items():
        try:
            found = version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        if not lowest <= _release(found) < below:
            want = f">={'.'.join(map(str, lowest))},<{'.'.join(map(str, below))}"
            problems.append(f"{name} {found} installed; the anchor was checked against {want}")
    return problems


# (what, the object to look on, attribute, the shape it must have)
Check = tuple[str, Any, str, Callable[[Any], bool]]


def _callable(value: Any) -> bool:
    return callable(value)


def _dict(value: Any) -> bool:
    return isinstance(value, dict)


def _int(value: Any) -> bool:
    return isinstance(value, int)


def _anything(value: Any) -> bool:
    return True


def _checks() -> list[Check]:
    """Every internal the anchor uses, on a transceiver as `AnchorLeg` makes one."""
    from aioice.turn import TurnClientUdpProtocol, TurnTransport
    from aiortc import RTCPeerConnection
    from aiortc.rtcrtpreceiver import StreamStatistics

    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("audio")
    sender, receiver = transceiver.sender, transceiver.receiver
    dtls = sender.transport
    connection = dtls.transport._connection
    turn = TurnClientUdpProtocol(("127.0.0.1", 3478), "u", "p", 600, 300)
    turn_transport = TurnTransport(turn)
    sent = "_RTCRtpSender__"
    return [
        ("RTCRtpTransceiver", transceiver, "_codecs", lambda v: isinstance(v, list)),
        ("RTCRtpTransceiver", transceiver, "_headerExtensions", lambda v: isinstance(v, list)),
        ("RTCRtpSender", sender, "_ssrc", _int),
        *[("RTCRtpSender", sender, f"{sent}{f}", _int) for f in ("packet_count", "octet_count")],
        *[("RTCRtpSender", sender, f"{sent}{f}", _anything) for f in ("rtp_timestamp", "ntp_timestamp")],
        ("RTCRtpReceiver", receiver, "_RTCRtpReceiver__remote_streams", _dict),
        ("RTCRtpReceiver", receiver, "_handle_rtp_packet", asyncio.iscoroutinefunction),
        ("RTCDtlsTransport", dtls, "_rx_srtp", lambda v: v is None),  # set once DTLS is up
        ("RTCDtlsTransport", dtls, "_tx_srtp", lambda v: v is None),
        ("aioice Connection", connection, "_nominated", _dict),
        ("aioice Connection", connection, "data_received", _callable),
        ("aioice Connection", connection, "_queue", lambda v: isinstance(v, asyncio.Queue)),
        ("StreamStatistics", StreamStatistics(48000), "add", _callable),
        *[("aioice TURN client", turn, name, _dict)
          for name in ("channel_to_peer", "peer_to_channel", "channel_refresh_at")],
        ("aioice TURN client", turn, "_send", _callable),
        ("aioice TURN client", turn, "server", lambda v: isinstance(v, tuple)),
        ("aioice TURN client", turn, "relayed_address", lambda v: v is None),
        ("aioice TurnTransport", turn_transport, "_TurnTransport__inner_protocol", lambda v: v is turn),
        ("aioice TurnTransport", turn_transport, "_TurnTransport__send_tasks", lambda v: isinstance(v, set)),
        ("aioice TurnTransport", turn_transport, "sendto", _callable),
    ]  # fmt: skip


async def _built() -> list[Check]:
    return _checks()  # aiortc's constructors want an event loop of their own thread


def check() -> list[str]:
    """What is not as the anchor expects (empty: all is); not cached. The objects are built in
    a thread and event loop of their own (called from anywhere, the caller's loop included)."""
    problems = _versions()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="anchor-check") as pool:
        try:
            checks = pool.submit(asyncio.run, _built()).result()
        except Exception as exc:  # a constructor that changed: that is the finding
            built = f"{type(exc).__name__}: {exc}"
            return [*problems, f"building a leg's aiortc objects failed: {built}"]
    for what, owner, name, shaped in checks:
        if not hasattr(owner, name):
            problems.append(f"{what} has no {name}")
        elif not shaped(getattr(owner, name)):
            problems.append(f"{what}.{name} is not what the anchor expects")
    return problems


@functools.cache
def problems() -> tuple[str, ...]:
    """`check()` once per process, logged when it finds anything."""
    found = tuple(check())
    if found:
        log.error("media anchor disabled, calls that must be recorded will not connect: "
                  "aiortc/aioice internals changed: %s", "; ".join(found))  # fmt: skip
    return found
