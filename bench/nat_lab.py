"""The NAT lab by hand: build it, place N calls per caller-site x callee-site cell, print the table.

Builds the lab of tests/lab (network namespaces, NAT routers with iptables, two `callgate serve`:
direct paths allowed, and relay-only), places every cell's call N times (`callgate call` from the
`<kind>-a` host to `callgate answer` on the `<kind>-b` host, a tone each way, 2 s of media), then
the extra cases: two hosts on one LAN, the same under relay-only policy, and a symmetric site that
cannot reach the relay. Prints, per cell: the path ICE took in each call (direct / relay), the
candidate types (caller's local/remote · callee's local/remote) of the most frequent outcome,
whether every call carried both tones, and the setup time p50 — from the caller's invite
(`calling`) to its media connected (callee answer + ICE + DTLS; the caller's own gathering
happened before the invite). Tears everything down at the end, also on Ctrl-C or failure.

    sudo .venv/bin/python bench/nat_lab.py             # 3 calls per cell
    sudo .venv/bin/python bench/nat_lab.py --calls 5 --json results.json

Needs root, iproute2 and iptables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab.matrix import Call, expected_path, matrix_rounds, print_table, row, run_calls
from tests.lab.netns import missing_capability
from tests.lab.service import CallOutcome, start_servers, stop_servers
from tests.lab.topology import KINDS, build


async def main(calls: int, json_out: Path | None) -> int:
    reason = missing_capability()
    if reason is not None:
        print(f"cannot build the lab: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="callgate-nat-lab-"))
    lab = build()
    servers = {}
    try:
        servers = start_servers(lab, root)
        everything, relay_only = servers["all"], servers["relay"]
        print(f"lab up in {time.monotonic() - started:.1f} s ({len(lab.net.names)} namespaces)")
        cells = [cell for _ in range(calls) for rnd in matrix_rounds(KINDS) for cell in rnd]
        rounds: list[list[Call]] = [
            [(everything, f"{a}-a", f"{b}-b") for a, b in rnd]
            for _ in range(calls)
            for rnd in matrix_rounds(KINDS)
        ]
        extras: list[Call] = [
            (everything, "lan-1", "lan-2"),
            (relay_only, "lan-1", "lan-2"),
            (everything, "symx", "lan-2"),
        ]
        for k in range(calls):
            for n, extra in enumerate(extras):
                rounds[(k * len(extras) + n) % len(rounds)].append(extra)
        outcomes = await run_calls(lab, rounds, root / "calls")
        matrix = [o for o in outcomes if o.caller.endswith("-a") and o.callee.endswith("-b")]
        by_cell: dict[tuple[str, str], list[CallOutcome]] = {}
        for cell, outcome in zip(cells, matrix, strict=True):
            by_cell.setdefault(cell, []).append(outcome)
        rows = [
            row(f"{a} -> {b}", expected_path(a, b), by_cell[(a, b)]) for a in KINDS for b in KINDS
        ]
        extra_rows = [
            ("lan-1 -> lan-2 (one LAN)", "direct", "all", "lan-1"),
            ("lan-1 -> lan-2 (relay-only policy)", "relay", "relay", "lan-1"),
            ("symx -> lan-2 (relay unreachable)", "setup-failed", "all", "symx"),
        ]
        for label, expected, server, caller in extra_rows:
            mine = [o for o in outcomes if o.server == server and o.caller == caller]
            rows.append(row(label, expected, mine))
        print()
        print_table(rows)
        failed = [o for o in outcomes if o.answered_to_end_s is not None and o.caller == "symx"]
        if failed:
            worst = max(o.answered_to_end_s or 0 for o in failed)
            print(f"\nrelay unreachable: answered -> call.ended at most {worst:.1f} s")
        print(f"\n{len(outcomes)} calls, {time.monotonic() - started:.0f} s in all")
        if json_out is not None:
            json_out.write_text(json.dumps(rows, indent=2))
        return 0
    finally:
        if servers:
            stop_servers(servers)
        lab.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3, help="calls per cell (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.calls, args.json)))
