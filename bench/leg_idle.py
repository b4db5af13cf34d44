"""What an anchor leg costs when no media flows: its peer connection's own timers (RTCP reports,
ICE consent checks, TURN refreshes), aiortc's two RTCP loops against `media/rtcp_reports.py`'s one.

In this process: the TURN server (in-process, as under `callgate serve`), N bridges of two anchor
legs each and their 2N aiortc parties, relay-only, connected and then left idle (the parties'
tracks never yield, so nobody sends RTP). The parties' own RTCP loops are stopped (both replaced
by an idle one), so what runs is the anchor legs' reports, both sides' consent checks and
refreshes, and the relay carrying them. Measured: this process's CPU (all threads) over S seconds,
per leg-second, modes interleaved:

  aiortc     the legs keep aiortc's two report loops (sender SR + SDES, receiver RR, each every
             0.5-1.5 s), as before rtcp_reports.py
  one-loop   rtcp_reports.py: one compound report every ~5 s (RFC 3550 §6.2)

    .venv/bin/python bench/leg_idle.py                       # 10 bridges, 20 s, 3 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiortc import RTCPeerConnection

from anchor_path import connect, in_process_server
from callgate.media import rtcp_reports

SETTLE = 3.0  # seconds after the last bridge connects before measuring (first reports, checks)


async def idle(owner: Any, prefix: str) -> None:
    """In place of a party's RTCP loop: started, then nothing until aiortc stops it."""
    getattr(owner, f"{prefix}rtcp_started").set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.get_running_loop().create_future()
    getattr(owner, f"{prefix}rtcp_exited").set()


def quiet(pc: RTCPeerConnection) -> None:
    """The party's RTCP loops idle (its transceiver's sender and receiver): only the anchor's run."""
    for transceiver in pc.getTransceivers():
        sender, receiver = transceiver.sender, transceiver.receiver
        sender._run_rtcp = lambda s=sender: idle(s, rtcp_reports.SENDER)
        receiver._run_rtcp = lambda r=receiver: idle(r, rtcp_reports.RECEIVER)


async def one_mode(mode: str, bridges: int, seconds: float) -> dict[str, float]:
    install = rtcp_reports.install
    if mode == "aiortc":
        rtcp_reports.install = lambda transceiver: None  # type: ignore[assignment,return-value]
    made: list[tuple[Any, ...]] = []
    observer = SimpleNamespace(on_packet=lambda packet: None)
    try:
        async with in_process_server() as server:
            port = server.address()[1]
            for _ in range(bridges):
                made.append(
                    await connect(port, observer, server.udp_client, quiet=quiet)  # type: ignore[arg-type]
                )
            await asyncio.sleep(SETTLE)
            cpu0, wall0 = time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            sent = sum(
                leg.reports.sent for _b, _a, _o, *legs in made for leg in legs if leg.reports
            )
            for bridge, alice, bob, *_legs in made:
                await asyncio.gather(alice.close(), bob.close(), bridge.close())
    finally:
        rtcp_reports.install = install  # type: ignore[method-assign]
    legs = 2 * bridges
    return {"ms_per_leg_s": 1000 * cpu / (legs * wall), "reports": sent, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bridges", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"aiortc": [], "one-loop": []}
    for _ in range(args.rounds):
        for mode in rows:  # interleaved: both see the same neighbours
            rows[mode].append(asyncio.run(one_mode(mode, args.bridges, args.seconds)))
    print(
        f"{args.bridges} bridges ({2 * args.bridges} anchor legs) idle, {args.seconds:g} s a round"
    )
    print(f"{'legs RTCP':<10} {'ms CPU per leg-second: median (min)':>36} {'one-loop reports':>16}")
    for mode, results in rows.items():
        per = [r["ms_per_leg_s"] for r in results]
        reports = statistics.median(r["reports"] for r in results)
        print(f"{mode:<10} {statistics.median(per):>27.3f} ({min(per):.3f}) {reports:>16.0f}")


if __name__ == "__main__":
    main()
