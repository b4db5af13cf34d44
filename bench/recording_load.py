"""Recorded calls through the media anchor against the same calls relayed end to end, one run.

Two `callgate serve` processes in turn (fresh data directory each, loopback, relay-only): the
first without policy rules (calls go end to end through the TURN relay, the reference), the
second with one rule `allow --recording-required` for everyone (each call's media ends at the
server's anchor, which forwards and records it). In each, N callers call N callees with
`CallSession`s in this process, talk for S seconds and hang up. By default the parties are lean
(`lean_party.py`: aiortc signaling, ICE and DTLS, then pre-encoded Opus, 440 Hz from callers and
880 Hz from callees, through the anchor's own `SrtpPath`), so the load generator costs about what
the anchor does; `--full-parties` uses aiortc's encoding and decoding parties instead (heavier,
no latency figure).

Reported per mode:

  steady ms/call-s   server CPU (utime+stime, all threads) per call-second while every call
                     was answered and talking: sampled every 0.25 s, over the window from 2 s
                     after the last answer to 1 s before the first hangup. calls/core =
                     1000 / this: the calls one core carries at this per-call cost.
  run ms/call-s      server CPU over the whole run (set-ups, hangups, closing recordings
                     included) / the calls' answered seconds (CDRs)
  client CPU s       this process (the parties), for scale
  answered/anchored  CDRs
  one-way ms         lean parties: party to party, p50 and p99, each received payload matched to
                     the time the other party sent it (one clock). The anchor's added latency is
                     the anchored p50 minus the relay's.
  delivered lost     lean parties: sequence numbers missing in what the parties received
                     (between each one's first and last packet) / packets received
  recorded/sent      anchored mode: RTP packets in the recordings / packets the parties
                     reported sending (final call.stats, outbound). Parties' final stats are
                     taken at their hangup, so a few packets a call land either side of it.
  in-recording gaps  anchored mode, read back from the encrypted recordings (master key in the
                     data directory): per leg, the RTP sequence numbers missing between its
                     first and last recorded packet — packets lost on the way to, or inside,
                     the anchor. The figure for "100 % of the packets in the recordings".
  coverage           anchored mode: recorded seconds / connected seconds. Connected (lean
                     parties): from when both parties were sending (the later one's first
                     frame, on the parties' clock, not the recording's) to the earlier one's
                     last frame (its hangup) or the CDR's end if sooner; with --full-parties,
                     from the callee's first recorded packet to the CDR's end. Recorded: the time in that window covered by both legs' audio
                     where the export places it (a leg's first arrival + RTP timestamp offset,
                     20 ms a packet; the lesser of the two legs).
  alignment          anchored mode: per recorded packet, |where the export places it (its leg's
                     first arrival + RTP timestamp offset) - when it reached the anchor|: how
                     far the stereo export's timeline is from the call's (p50, p99, max).

    .venv/bin/python bench/recording_load.py                  # 4 calls, 10 s
    .venv/bin/python bench/recording_load.py --calls 20 --seconds 20
    .venv/bin/python bench/recording_load.py --calls 50 --concurrent 10 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callgate.client.signaling import SignalingClient
from callgate.client.softphone import MediaOptions, answer_calls, place_call
from lean_party import LeanParties, frames_by_role, percentile
from recording_figures import db_figures, recording_figures, steady_cpu
from serve_process import CallgateServe, callgate_binary

SAMPLE_EVERY = 0.25


async def run_calls(
    serve: CallgateServe, calls: range, seconds: float, stagger: float
) -> list[Any]:
    tasks = []
    clients = []
    for i in calls:
        caller = await SignalingClient.connect(serve.url, serve.tokens[f"caller{i}"], "bench")
        callee = await SignalingClient.connect(serve.url, serve.tokens[f"callee{i}"], "bench")
        clients += [caller, callee]
        stop = asyncio.Event()  # a callee never rung (recording-unavailable) stops waiting
        answering = answer_calls(
            callee, callee.hello, MediaOptions(tone=880.0), count=1, stop=stop, setup_timeout=60
        )
        placing = asyncio.create_task(
            place_call(
                caller, caller.hello, f"callee{i}", MediaOptions(tone=440.0), duration=seconds,
                setup_timeout=60,
            )
        )  # fmt: skip
        placing.add_done_callback(lambda _, stop=stop: stop.set())
        tasks += [asyncio.create_task(answering), placing]
        await asyncio.sleep(stagger)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.close()
    return results


async def sample_cpu(serve: CallgateServe, samples: list[tuple[float, float]]) -> None:
    while True:
        samples.append((time.time(), serve.cpu()))
        await asyncio.sleep(SAMPLE_EVERY)


def lean_figures(lean: LeanParties | None) -> dict[str, Any]:
    if lean is None:
        return {"latency": None}
    received = sum(p.received for p in lean.parties)
    return {
        "latency": (percentile(lean.latencies, 0.5), percentile(lean.latencies, 0.99)),
        "delivered": received,
        "delivered_lost": sum(p.lost for p in lean.parties),
        "unknown": sum(p.unknown for p in lean.parties),
    }


async def one_mode(
    recorded: bool,
    calls: int,
    concurrent: int,
    seconds: float,
    stagger: float,
    lean: LeanParties | None,
    profile: Path | None,
) -> dict[str, Any]:
    users = {f"caller{i}": "" for i in range(calls)} | {f"callee{i}": "" for i in range(calls)}
    with tempfile.TemporaryDirectory(prefix="callgate-recbench-") as tmp:
        data = Path(tmp)
        if recorded:
            subprocess.run(
                [callgate_binary(), "policy", "add", "record-all", "allow",
                 "--recording-required", "--data-dir", str(data)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
        env = {"CALLGATE_CALLS__SETUP_TIMEOUT": "60", "CALLGATE_RECORDING__MAX_ACTIVE": "1000"}
        with CallgateServe(
            users, fast_users=True, keep=data, extra_env=env, profile=profile
        ) as serve:
            samples: list[tuple[float, float]] = []
            background = [asyncio.create_task(sample_cpu(serve, samples))]
            if lean is not None:
                background.append(asyncio.create_task(lean.run()))
            cpu0, client0, wall0 = serve.cpu(), time.process_time(), time.monotonic()
            results = []
            for first in range(0, calls, concurrent):  # waves of `concurrent` calls at once
                wave = range(first, min(calls, first + concurrent))
                results += await run_calls(serve, wave, seconds, stagger)
            await asyncio.sleep(1.0)  # recordings closed, final stats written
            cpu, client = serve.cpu() - cpu0, time.process_time() - client0
            wall = time.monotonic() - wall0
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            serve.stop()
            figures = db_figures(serve.database)
            if recorded:
                talking = None if lean is None else lean.talking()
                figures |= recording_figures(data, serve.database, talking)
    return {
        "mode": "anchored+recorded" if recorded else "relay (reference)",
        "server_cpu_s": cpu,
        "steady_cpu": steady_cpu(samples, sorted(figures["windows"])[:concurrent]),  # 1st wave
        "client_cpu_s": client,
        "wall_s": wall,
        "errors": [repr(r) for r in results if isinstance(r, BaseException)],
        **figures,
        **lean_figures(lean),
    }


def report(calls: int, concurrent: int, seconds: float, rows: list[dict[str, Any]]) -> None:
    waves = f" in waves of {concurrent}" if concurrent < calls else " at once"
    print(f"{calls} calls{waves}, {seconds:g} s of media each, loopback")
    print(
        f"{'mode':<20} {'steady ms/call-s':>16} {'calls/core':>10} {'run ms/call-s':>13} "
        f"{'server CPU s':>12} {'client CPU s':>12} {'wall s':>6} {'answered':>8} "
        f"{'anchored':>8} {'one-way ms p50/p99':>18}"
    )
    for row in rows:
        steady = 1000 * row["steady_cpu"]
        per = 1000 * row["server_cpu_s"] / row["answered_s"] if row["answered_s"] else float("nan")
        latency = "-"
        if row["latency"] is not None:
            latency = f"{1000 * row['latency'][0]:.2f}/{1000 * row['latency'][1]:.2f}"
        print(
            f"{row['mode']:<20} {steady:>16.2f} {1000 / steady:>10.0f} {per:>13.2f} "
            f"{row['server_cpu_s']:>12.2f} {row['client_cpu_s']:>12.2f} {row['wall_s']:>6.1f} "
            f"{row['answered']:>8} {row['anchored']:>8} {latency:>18}"
        )
        if row["latency"] is not None:
            lost, got = row["delivered_lost"], row["delivered"]
            share = 100 * lost / (lost + got) if got else 0.0
            print(
                f"  delivered to the parties: {got} packets, {lost} missing ({share:.3f} %),"
                f" {row['unknown']} unmatched"
            )
        if row["recordings"]:
            share = 100 * row["recorded"] / row["sent"] if row["sent"] else 0.0
            legs = ", ".join(f"{leg} {r}/{s}" for leg, (r, s) in row["by_leg"].items())
            gaps = ", ".join(f"{leg} {n}" for leg, n in row["gaps"].items())
            print(
                f"  recorded/sent: {row['recorded']}/{row['sent']} ({share:.2f} %; {legs});"
                f" in-recording gaps (packets): {gaps}"
            )
            cover = 100 * row["recorded_s"] / row["connected_s"] if row["connected_s"] else 0.0
            print(
                f"  coverage: recorded {row['recorded_s']:.2f} s / connected "
                f"{row['connected_s']:.2f} s = {cover:.3f} % over {row['recordings']} recordings"
            )
            p50, p99, worst = (1000 * x for x in row["alignment"])
            print(
                f"  alignment (export position - arrival at the anchor): p50 {p50:.1f} ms,"
                f" p99 {p99:.1f} ms, max {worst:.1f} ms"
            )
        if row["failed"]:
            print("  not answered: " + ", ".join(f"{n} {why}" for why, n in row["failed"].items()))
        for error in row["errors"]:
            print(f"  error: {error}")
    if len(rows) == 2 and rows[0]["latency"] is not None:
        added = 1000 * (rows[1]["latency"][0] - rows[0]["latency"][0])
        ratio = rows[1]["steady_cpu"] / rows[0]["steady_cpu"]
        print(f"anchor's added one-way latency, p50: {added:.2f} ms; steady CPU anchored/relay:"
              f" {ratio:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--concurrent", type=int, help="calls at once, in waves (default: all); steady CPU is "
        "measured in the first wave",
    )  # fmt: skip
    parser.add_argument("--stagger", type=float, default=0.2, help="seconds between call setups")
    parser.add_argument(
        "--profile", type=Path, help="run the anchored server under cProfile, stats to this file"
    )
    parser.add_argument("--anchored-only", action="store_true", help="skip the relay reference")
    parser.add_argument(
        "--full-parties", action="store_true", help="aiortc parties that encode and decode Opus"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    frames = None if args.full_parties else frames_by_role()
    concurrent = min(args.calls, args.concurrent or args.calls)
    rows = []
    for recorded in (True,) if args.anchored_only else (False, True):
        lean = None if frames is None else LeanParties(frames)
        profile = args.profile if recorded else None
        with contextlib.nullcontext() if lean is None else lean.installed():
            run = one_mode(
                recorded, args.calls, concurrent, args.seconds, args.stagger, lean, profile
            )
            rows.append(asyncio.run(run))
    report(args.calls, concurrent, args.seconds, rows)


if __name__ == "__main__":
    main()
