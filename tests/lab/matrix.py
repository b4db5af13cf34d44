"""The caller-site by callee-site matrix: which calls, in which order, and what ICE must choose.

Callers sit on the `-a` sites, callees on the `-b` sites, so every ordered pair of NAT kinds is
one cell with two different routers. Calls run in rounds of a Latin square: in round k, the i-th
`-a` site calls the ((i+k) mod n)-th `-b` site, so no account is in two calls at once.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from pathlib import Path

from tests.lab.service import (
    CALLEE_TONE,
    CALLER_TONE,
    CallOutcome,
    LabServer,
    Softphone,
    place_call,
    start_answerer,
)
from tests.lab.topology import KINDS, Lab

Cell = tuple[str, str]  # (caller kind, callee kind)
ANSWERERS_AT_ONCE = 3


def expected_path(caller: str, callee: str) -> str:
    """What ICE must end up with between two sites (RFC 8445 with RFC 4787 NAT behaviours).

    - The firewall drops all UDP: its side has only a relayed candidate (TURN over TCP 443).
    - An `eim` NAT accepts packets from anyone on its mapping: the other side's checks to its
      srflx candidate get in, whatever the other NAT does → direct.
    - `prc` ↔ `prc`: both keep their port for every destination, so each one's check to the
      other's srflx opens the way for the other's (hole punching) → direct.
    - A `sym` NAT sends each check from a new port that the filtering `prc`/`sym` NAT on the
      other side has never sent to, and drops what arrives on its own mapping from anyone but
      the STUN server → relay.
    """
    if "fw" in (caller, callee):
        return "relay"
    if "eim" in (caller, callee):
        return "direct"
    if "sym" in (caller, callee):
        return "relay"
    return "direct"


# The cells whose calls the matrix server must record (a recording-required rule for each, see
# conftest.py): the ten where ICE between the two NATs can only relay. Recorded calls are anchored
# on the server, relay-only through its TURN from behind every NAT kind (each kind is caller and
# callee in at least one); the six where ICE finds a direct path stay plain end-to-end calls,
# which still prove hole punching.
ANCHORED: list[Cell] = [
    (a, b) for a in KINDS for b in KINDS if expected_path(a, b) == "relay"
]  # fmt: skip


def matrix_rounds(kinds: tuple[str, ...] = KINDS) -> list[list[Cell]]:
    n = len(kinds)
    return [[(kinds[i], kinds[(i + k) % n]) for i in range(n)] for k in range(n)]


Call = tuple[LabServer, str, str]  # (server, caller handle, callee handle)

# A known server fault (records/audit.py, in progress): concurrent audited writes on SQLite can
# collide on audit_entries.seq; the loser's sign-in answers HTTP 500 or its invite `server-error`.
# Such a call never reached the network, so it is placed again (and the retry is reported).
SERVER_FAULTS = ("server-error", "HTTP 500")


def _server_fault(outcome: CallOutcome) -> bool:
    rang = any(e.get("event") == "ringing" for e in outcome.events.get(outcome.caller, []))
    said = f"{outcome.reason} {outcome.stderr.get(outcome.caller, '')}"
    return not rang and any(fault in said for fault in SERVER_FAULTS)


async def place_call_retrying(
    lab: Lab, server: LabServer, caller: str, answerer: Softphone, workdir: Path, duration: float
) -> CallOutcome:
    """One call; placed once more when a server fault (SERVER_FAULTS) stopped it before anyone
    rang: it never reached ICE. The retry is recorded in the outcome, so a report shows it."""
    outcome = await place_call(lab, server, caller, answerer, workdir, duration=duration)
    if _server_fault(outcome):
        first = outcome
        outcome = await place_call(lab, server, caller, answerer, workdir, duration=duration)
        outcome.retried = f"{first.reason}: {first.stderr.get(caller, '')[-300:]}"
    return outcome


async def run_calls(
    lab: Lab, rounds: list[list[Call]], workdir: Path, duration: float = 2.0
) -> list[CallOutcome]:
    """Rounds of calls, each round's calls at the same time; outcomes in schedule order.

    Each (server, callee) runs one `callgate answer` for all its calls; each call is one
    `callgate call`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    callees = sorted({(s.name, callee) for calls in rounds for s, _, callee in calls})
    servers = {s.name: s for calls in rounds for s, _, _ in calls}
    count = {
        key: sum((s.name, c) == key for calls in rounds for s, _, c in calls) for key in callees
    }
    # A few sign-ins at a time: each is an argon2id hash on the server, and a burst of them on a
    # busy 2-core machine outlasted the client's 10 s request timeout.
    signing_in = asyncio.Semaphore(ANSWERERS_AT_ONCE)

    async def answerer(name: str, callee: str) -> Softphone:
        async with signing_in:
            return await start_answerer(
                lab, servers[name], callee, count[(name, callee)], workdir / name
            )

    answerers = await asyncio.gather(*(answerer(name, callee) for name, callee in callees))
    by_key = dict(zip(callees, answerers, strict=True))
    outcomes: list[CallOutcome] = []
    try:
        for calls in rounds:
            outcomes += await asyncio.gather(
                *(
                    place_call_retrying(
                        lab,
                        server,
                        caller,
                        by_key[(server.name, callee)],
                        workdir / server.name,
                        duration,
                    )
                    for server, caller, callee in calls
                )
            )
    finally:
        finished = await asyncio.gather(*(phone.finish() for phone in answerers))
    for key, (code, errors) in zip(callees, finished, strict=True):
        for outcome in outcomes:
            if (outcome.server, outcome.callee) == key:
                outcome.callee_code = code
                outcome.stderr[outcome.callee] = errors
    return outcomes


def matrix_schedule(
    server: LabServer, kinds: tuple[str, ...] = KINDS, extras: list[list[Call]] | None = None
) -> tuple[list[Cell], list[list[Call]]]:
    """The matrix's cells in schedule order, and its rounds with `extras[k]` added to round k."""
    cells = [cell for calls in matrix_rounds(kinds) for cell in calls]
    rounds: list[list[Call]] = [
        [(server, f"{a}-a", f"{b}-b") for a, b in calls] for calls in matrix_rounds(kinds)
    ]
    for k, extra in enumerate(extras or []):
        rounds[k % len(rounds)] += extra
    return cells, rounds


# ---- the table (bench/nat_lab.py, and the test's output) ----


def heard(outcome: CallOutcome) -> bool:
    """Both tones arrived (within 5 Hz)."""
    return (
        outcome.heard_by_callee is not None
        and outcome.heard_by_caller is not None
        and abs(outcome.heard_by_callee - CALLER_TONE) < 5
        and abs(outcome.heard_by_caller - CALLEE_TONE) < 5
    )


def row(label: str, expected: str, outcomes: list[CallOutcome]) -> dict[str, object]:
    """One table row for the calls of a cell."""
    paths = Counter(o.path for o in outcomes)
    types = Counter(
        f"{'/'.join(o.caller_types or ('-', '-'))} · {'/'.join(o.callee_types or ('-', '-'))}"
        for o in outcomes
    )
    setups = [o.setup_s * 1000 for o in outcomes if o.setup_s is not None]
    return {
        "cell": label,
        "expected": expected,
        "paths": ", ".join(f"{p} {n}/{len(outcomes)}" for p, n in paths.most_common()),
        "types": types.most_common(1)[0][0],
        "audio": f"{sum(heard(o) for o in outcomes)}/{len(outcomes)}",
        "setup_p50_ms": round(statistics.median(setups)) if setups else None,
        "end": ",".join(sorted(str(o.reason) for o in outcomes)),
        "retried": sum(o.retried is not None for o in outcomes),
    }


def print_table(rows: list[dict[str, object]]) -> None:
    heads = ["cell", "expected", "paths", "types", "audio", "setup_p50_ms", "end", "retried"]
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in heads}
    print("  ".join(h.ljust(widths[h]) for h in heads))
    for r in rows:
        print("  ".join(str(r[h]).ljust(widths[h]) for h in heads))
