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
import inspect
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


def _event(value: Any) -> bool:
    return isinstance(value, asyncio.Event)


def _own_datagram_received(value: Any) -> bool:
    """aioice's own handler, not asyncio's empty default (which a rename would leave)."""
    return callable(value) and (
        getattr(value, "__func__", None) is not asyncio.DatagramProtocol.datagram_received
    )


def _source_says(*needles: str) -> Callable[[Any], bool]:
    """The function's source holds each of `needles` (how aiortc uses what we replace: a
    method looked up on the instance, an event it waits for). No source to read fails too."""

    def says(value: Any) -> bool:
        source = inspect.getsource(value)
        return all(needle in source for needle in needles)

    return says


def _checks() -> list[Check]:
    """Every internal the anchor uses (srtp_path.py, packets.py, srtp_io.py, rtcp_reports.py), on
    a transceiver as `AnchorLeg` makes one and the aioice objects a leg's nominated pair is made of."""
    import pylibsrtp
    from aioice.candidate import Candidate
    from aioice.ice import CandidatePair, StunProtocol
    from aioice.turn import TurnClientUdpProtocol, TurnTransport
    from aiortc import RTCPeerConnection, rtcdtlstransport
    from aiortc.rtcrtpreceiver import StreamStatistics

    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("audio")
    sender, receiver = transceiver.sender, transceiver.receiver
    dtls = sender.transport
    connection = dtls.transport._connection
    # what DTLS puts in `_rx_srtp`/`_tx_srtp` once it is up, keyed as aiortc keys it
    policy = pylibsrtp.Policy(key=bytes(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
    session = pylibsrtp.Session(policy)
    marker = object()  # a transport, as the event loop hands it to a protocol
    stun = StunProtocol(connection)
    stun.connection_made(marker)  # type: ignore[arg-type]
    pair = CandidatePair(stun, Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "relay"))
    turn = TurnClientUdpProtocol(("127.0.0.1", 3478), "u", "p", 600, 300)
    turn.connection_made(marker)  # type: ignore[arg-type]
    turn_transport = TurnTransport(turn)
    sent = "_RTCRtpSender__"
    return [
        ("RTCRtpTransceiver", transceiver, "_codecs", lambda v: isinstance(v, list)),
        ("RTCRtpTransceiver", transceiver, "_headerExtensions", lambda v: isinstance(v, list)),
        ("RTCRtpSender", sender, "_ssrc", _int),
        *[("RTCRtpSender", sender, f"{sent}{f}", _int)
          for f in ("packet_count", "octet_count", "rtp_timestamp", "ntp_timestamp")],
        ("RTCRtpReceiver", receiver, "_RTCRtpReceiver__remote_streams", _dict),
        # rtcp_reports.py: both report loops replaced, the figures they read
        *[(what, owner, "_run_rtcp", inspect.iscoroutinefunction)
          for what, owner in (("RTCRtpSender", sender), ("RTCRtpReceiver", receiver))],
        ("RTCRtpSender", sender, "_send_rtcp", inspect.iscoroutinefunction),
        # ... and aiortc starts and stops them the way rtcp_reports.install replaces them: the
        # loop looked up on the instance as it starts, its exit event awaited as it stops
        ("RTCRtpSender", sender, "send", _source_says("ensure_future(self._run_rtcp())")),
        ("RTCRtpReceiver", receiver, "receive", _source_says("ensure_future(self._run_rtcp())")),
        *[(what, owner, "stop", _source_says("self.__rtcp_started.wait()",
                                              "self.__rtcp_task.cancel()",
                                              "self.__rtcp_exited.wait()"))
          for what, owner in (("RTCRtpSender", sender), ("RTCRtpReceiver", receiver))],
        *[("RTCRtpSender", sender, f"{sent}{f}", _event) for f in ("rtcp_started", "rtcp_exited")],
        *[("RTCRtpReceiver", receiver, f"_RTCRtpReceiver__{f}", _event)
          for f in ("rtcp_started", "rtcp_exited")],
        *[("RTCRtpReceiver", receiver, f"_RTCRtpReceiver__{f}", _dict) for f in ("lsr", "lsr_time")],
        *[("RTCRtpSender", sender, f"{sent}{f}", lambda v: v is None)
          for f in ("lsr", "lsr_time", "cname")],  # set as reports are sent / the leg starts
        ("RTCRtpReceiver", receiver, "_handle_rtp_packet", inspect.iscoroutinefunction),
        ("RTCDtlsTransport", dtls, "_rx_srtp", lambda v: v is None),  # set once DTLS is up:
        ("RTCDtlsTransport", dtls, "_tx_srtp", lambda v: v is None),
        ("aiortc DTLS", rtcdtlstransport, "Session", lambda v: v is pylibsrtp.Session),  # to this
        ("pylibsrtp Session", session, "protect", _callable),
        ("pylibsrtp Session", session, "unprotect", _callable),
        ("pylibsrtp", pylibsrtp, "Error", lambda v: isinstance(v, type) and issubclass(v, Exception)),
        ("aioice Connection", connection, "_nominated", _dict),
        ("aioice Connection", connection, "data_received", _callable),
        ("aioice Connection", connection, "_queue", lambda v: isinstance(v, asyncio.Queue)),
        ("aioice CandidatePair", pair, "protocol", lambda v: v is stun),
        ("aioice CandidatePair", pair, "remote_addr", lambda v: tuple(v) == ("127.0.0.1", 9)),
        ("aioice StunProtocol", stun, "transport", lambda v: v is marker),
        ("StreamStatistics", StreamStatistics(48000), "add", _callable),
        *[("aioice TURN client", turn, name, _dict)
          for name in ("channel_to_peer", "peer_to_channel", "channel_refresh_at")],
        ("aioice TURN client", turn, "_send", _callable),
        ("aioice TURN client", turn, "datagram_received", _own_datagram_received),
        ("aioice TURN client", turn, "transport", lambda v: v is marker),  # its get_extra_info
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
        try:
            value = getattr(owner, name)
        except AttributeError:
            problems.append(f"{what} has no {name}")
            continue
        except Exception as exc:  # a property that fails: changed all the same
            problems.append(f"{what}.{name} failed: {type(exc).__name__}: {exc}")
            continue
        try:
            shaped_so = shaped(value)
        except Exception:
            shaped_so = False
        if not shaped_so:
            problems.append(f"{what}.{name} is not what the anchor expects")
    return problems


@functools.cache
def problems() -> tuple[str, ...]:
    """`check()` once per process, logged when it finds anything. A check that itself fails
    is a finding too, kept like any other: the anchor stays off, and no leg checks again."""
    try:
        found = tuple(check())
    except Exception as exc:
        found = (f"checking aiortc/aioice internals failed: {type(exc).__name__}: {exc}",)
    if found:
        log.error("media anchor disabled, calls that must be recorded will not connect: "
                  "aiortc/aioice internals changed: %s", "; ".join(found))  # fmt: skip
    return found
