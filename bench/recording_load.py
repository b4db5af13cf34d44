"""Recorded calls through the media anchor against the same calls relayed end to end, one run.

Two `callgate serve` processes in turn (fresh data directory each, loopback, relay-only): the
first without policy rules (calls go end to end through the TURN relay, the reference), the
second with one rule `allow --recording-required` for everyone (each call's media ends at the
server's anchor, which forwards and records it). In each, N callers call N callees at once with
aiortc `CallSession`s in this process (caller 440 Hz, callee 880 Hz), talk for S seconds and hang
up.

Reported per mode:

  server CPU s       utime+stime of the serve process (all threads) over the whole run
  CPU ms/call-s      that, divided by the calls' total answered seconds (from the CDRs)
  client CPU s       this process (the aiortc parties), for scale
  connected          calls whose both parties reached media
  recorded/sent      anchored mode: RTP packets in the recordings / packets the parties
                     reported sending (final call.stats, outbound), over all calls

    .venv/bin/python bench/recording_load.py                  # 4 calls, 10 s
    .venv/bin/python bench/recording_load.py --calls 8 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callgate.client.signaling import SignalingClient
from callgate.client.softphone import MediaOptions, answer_calls, place_call
from serve_process import CallgateServe, callgate_binary


async def run_calls(serve: CallgateServe, calls: int, seconds: float) -> list[Any]:
    tasks = []
    clients = []
    for i in range(calls):
        caller = await SignalingClient.connect(serve.url, serve.tokens[f"caller{i}"], "bench")
        callee = await SignalingClient.connect(serve.url, serve.tokens[f"callee{i}"], "bench")
        clients += [caller, callee]
        answering = answer_calls(
            callee, callee.hello, MediaOptions(tone=880.0), count=1, setup_timeout=30
        )
        placing = place_call(
            caller, caller.hello, f"callee{i}", MediaOptions(tone=440.0), duration=seconds,
            setup_timeout=30,
        )  # fmt: skip
        tasks += [asyncio.create_task(answering), asyncio.create_task(placing)]
        await asyncio.sleep(0.2)  # stagger the setups a little
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.close()
    return results


def db_figures(database: Path) -> dict[str, Any]:
    with sqlite3.connect(database) as db:
        calls = db.execute(
            "SELECT count(*), coalesce(sum(duration_s), 0), sum(anchored = 1) FROM calls"
            " WHERE disposition = 'answered'"
        ).fetchone()
        sent = db.execute(
            "SELECT coalesce(sum(packets), 0) FROM call_quality"
            " WHERE direction = 'outbound' AND final = 1"
        ).fetchone()[0]
        metas = [json.loads(m) for (m,) in db.execute("SELECT metadata_json FROM recordings")]
    recorded = sum(s["packets"] for m in metas for s in m.get("streams", []))
    return {
        "answered": calls[0],
        "answered_s": float(calls[1]),
        "anchored": int(calls[2] or 0),
        "sent": int(sent),
        "recorded": recorded,
        "recordings": len(metas),
    }


async def one_mode(recorded: bool, calls: int, seconds: float) -> dict[str, Any]:
    users = {f"caller{i}": "" for i in range(calls)} | {f"callee{i}": "" for i in range(calls)}
    with tempfile.TemporaryDirectory(prefix="callgate-recbench-") as tmp:
        data = Path(tmp)
        if recorded:
            subprocess.run(
                [callgate_binary(), "policy", "add", "record-all", "allow",
                 "--recording-required", "--data-dir", str(data)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
        env = {"CALLGATE_CALLS__SETUP_TIMEOUT": "30"}
        with CallgateServe(users, fast_users=True, keep=data, extra_env=env) as serve:
            cpu0, client0, wall0 = serve.cpu(), time.process_time(), time.monotonic()
            results = await run_calls(serve, calls, seconds)
            await asyncio.sleep(1.0)  # recordings closed, final stats written
            cpu, client = serve.cpu() - cpu0, time.process_time() - client0
            wall = time.monotonic() - wall0
            serve.stop()
            figures = db_figures(serve.database)
    connected = sum(
        1 for r in results if not isinstance(r, BaseException) and getattr(r, "connected", False)
    )
    return {
        "mode": "anchored+recorded" if recorded else "relay (reference)",
        "server_cpu_s": cpu,
        "client_cpu_s": client,
        "wall_s": wall,
        "connected_calls": connected // 1,
        "errors": [repr(r) for r in results if isinstance(r, BaseException)],
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = [asyncio.run(one_mode(mode, args.calls, args.seconds)) for mode in (False, True)]
    print(f"{args.calls} concurrent calls, {args.seconds:g} s of media each, loopback")
    header = (
        f"{'mode':<20} {'server CPU s':>12} {'CPU ms/call-s':>13} {'client CPU s':>12} "
        f"{'answered':>8} {'anchored':>8} {'recorded/sent':>22}"
    )
    print(header)
    for row in rows:
        per = 1000 * row["server_cpu_s"] / row["answered_s"] if row["answered_s"] else float("nan")
        cover = (
            f"{row['recorded']}/{row['sent']} ({100 * row['recorded'] / row['sent']:.2f} %)"
            if row["recordings"] and row["sent"]
            else "-"
        )
        print(
            f"{row['mode']:<20} {row['server_cpu_s']:>12.2f} {per:>13.2f} "
            f"{row['client_cpu_s']:>12.2f} {row['answered']:>8} {row['anchored']:>8} {cover:>22}"
        )
        for error in row["errors"]:
            print(f"  error: {error}")


if __name__ == "__main__":
    main()
