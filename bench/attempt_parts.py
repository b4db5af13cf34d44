"""CPU of each part of a call attempt's server-side work, one part at a time, in this process.

`cluster_load.py` measures a whole attempt through `callgate serve` (≈ 1.1-1.7 ms of server CPU
on SQLite on these shared cores); this takes it apart. One attempt of that benchmark is 3
messages in (call.invite, call.answer, call.hangup) and 8 out (the invite's ack and call.ringing
to the caller, call.incoming to the callee, the answer's ack, call.answered, the hangup's ack,
call.ended to both), two SDPs filtered for relay-only, one policy decision with its database
read on a worker thread, and three records writes. Each part below runs `--attempts` times
with the messages and SDPs of `signaling_load.py`, and prints its CPU (`time.process_time`,
all threads) per attempt:

- WebSocket framing: the `websockets` sans-I/O protocol uvicorn runs (parse 3 masked client
  frames, build 8 server frames), without the socket calls;
- JSON: decoding the 3 messages, encoding the 8 (the one encoder api/ws.py keeps);
- validation: `parse_client_message` for the 3 (JSON decode and pydantic);
- engine: `CallEngine` invite, answer and hangup, relay-only (the two SDP filters included);
- SDP: `filter_sdp` twice (the engine's, counted in the line above too) and `relay_candidates`
  twice (the hub's);
- policy: `PolicyStore.verdict` for two accounts of a SQLite store (the parties' groups read,
  the cached policy), as the invite's worker thread runs it;
- thread hop: one `asyncio.to_thread` round trip (the invite's), on uvloop;
- message queue: handing 8 messages to per-device writer tasks through their `asyncio.Queue`s
  (the hub's `send`), the tasks woken;
- records: the call recorder's three writes (CDR insert, answer, finalize and their three audit
  entries) on a SQLite file, group-committed in batches of `--burst` attempts.

What is left of a served attempt is the socket system calls (11 per attempt, 12-18 % of the
server's CPU is in the kernel), uvicorn's and Starlette's per-message layers, the hub's own
bookkeeping and the event loop. No part is timed with the others running: the figures add up
to less than a served attempt (cache misses, the GIL passed between threads).

    .venv/bin/python bench/attempt_parts.py
    .venv/bin/python bench/attempt_parts.py --attempts 5000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from websockets.frames import Frame
from websockets.protocol import Protocol, Side, State

from callgate.clock import ManualClock
from callgate.signaling import messages as m
from callgate.signaling.engine import CallEngine
from callgate.signaling.sdp import filter_sdp, relay_candidates
from signaling_load import minimal_sdp

RELAYS = {"127.0.0.1"}
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # as api/ws.py
OFFER, ANSWER = minimal_sdp(40000), minimal_sdp(40002)
CALL_ID = "0" * 32


def inbound() -> list[str]:
    return [
        json.dumps({"type": "call.invite", "id": "m1", "to": "bob", "sdp": OFFER}),
        json.dumps({"type": "call.answer", "id": "m1", "call_id": CALL_ID, "sdp": ANSWER}),
        json.dumps({"type": "call.hangup", "id": "m2", "call_id": CALL_ID}),
    ]


def outbound() -> list[dict[str, object]]:
    return [
        m.ack_message("m1", call_id=CALL_ID, ice_transport_policy="relay"),
        m.ringing_message(CALL_ID, 1),
        m.incoming_message(CALL_ID, "alice", "Alice", OFFER, True),
        m.ack_message("m1"),
        m.answered_message(CALL_ID, ANSWER),
        m.ack_message("m2"),
        m.ended_message(CALL_ID, "hangup", "caller"),
        m.ended_message(CALL_ID, "hangup", "caller"),
    ]


def framing(n: int) -> None:
    client = Protocol(Side.CLIENT, state=State.OPEN)
    server = Protocol(Side.SERVER, state=State.OPEN, max_size=2**20)
    wire = []
    for text in inbound():
        client.send_text(text.encode())
        wire.append(b"".join(client.data_to_send()))
    out = [_ENCODE(message).encode() for message in outbound()]
    for _ in range(n):
        for data in wire:
            server.receive_data(data)
            for event in server.events_received():
                assert isinstance(event, Frame)
        for data in out:
            server.send_text(data)
            server.data_to_send()


def json_codec(n: int) -> None:
    texts, messages = inbound(), outbound()
    for _ in range(n):
        for text in texts:
            json.loads(text)
        for message in messages:
            _ENCODE(message)


def validation(n: int) -> None:
    texts = inbound()
    for _ in range(n):
        for text in texts:
            m.parse_client_message(text)


def engine(n: int) -> None:
    clock = ManualClock()
    calls = CallEngine(clock, relay_addresses=RELAYS)
    calls.device_connected("a1", "alice", "Alice", relay_only=True)
    calls.device_connected("b1", "bob", "Bob", relay_only=True)
    for _ in range(n):
        effects = calls.invite("a1", "m1", "bob", OFFER, True)
        call_id = calls.call_of("a1")
        assert call_id is not None, effects
        calls.answer("b1", "m1", call_id, ANSWER)
        calls.hangup("a1", "m2", call_id)
        clock.advance(20.0)  # the ended call's grace for late stats expires
        calls.tick()


def sdp(n: int) -> None:
    for _ in range(n):
        filter_sdp(OFFER, True, RELAYS)
        relay_candidates(OFFER)
        filter_sdp(ANSWER, True, RELAYS)
        relay_candidates(ANSWER)


def policy(store_dir: Path) -> Callable[[int], None]:
    from callgate.accounts.service import AccountService
    from callgate.policy.store import PolicyStore
    from callgate.storage.db import open_store, sqlite_url

    store = open_store(sqlite_url(store_dir))
    accounts = AccountService(store, "callgate")
    for handle in ("alice", "bob"):
        if accounts.get(handle) is None:
            accounts.create_user(handle, groups=["sales"])
    decisions = PolicyStore(store)

    def run(n: int) -> None:
        now = datetime.now(UTC)
        for _ in range(n):
            decisions.verdict("alice", "bob", now)

    return run


def thread_hop(n: int) -> None:
    import uvloop

    async def hops() -> None:
        for _ in range(n):
            await asyncio.to_thread(int)

    uvloop.run(hops())


def message_queue(n: int) -> None:
    import uvloop

    async def fan_out() -> None:
        queues: list[asyncio.Queue[int | None]] = [asyncio.Queue() for _ in range(2)]

        async def writer(queue: asyncio.Queue[int | None]) -> None:
            while await queue.get() is not None:
                pass

        tasks = [asyncio.create_task(writer(q)) for q in queues]
        for _ in range(n):  # an attempt: 5 messages to the caller, 3 to the callee, 5 wake-ups
            for step in ((0, 0), (1,), (0,), (0, 1)):
                for device in step:
                    queues[device].put_nowait(1)
                await asyncio.sleep(0)
            queues[1].put_nowait(1)
            await asyncio.sleep(0)
        for queue in queues:
            queue.put_nowait(None)
        await asyncio.gather(*tasks)

    uvloop.run(fan_out())


def records(store_dir: Path, burst: int) -> Callable[[int], None]:
    from callgate.records.call_recorder import CallEnd, CallRecorder
    from callgate.records.cdr import CallOpen, CdrRepository
    from callgate.records.cdr_types import new_call_id
    from callgate.records.quality_store import QualityRepository
    from callgate.storage.db import open_store, sqlite_url

    store = open_store(sqlite_url(store_dir))
    recorder = CallRecorder(
        CdrRepository(store, node_id="bench"), QualityRepository(store.sessions)
    )
    recorder.settled().result(30)

    def run(n: int) -> None:
        start = datetime.now(UTC)
        for first in range(0, n, burst):
            ids = [new_call_id() for _ in range(min(burst, n - first))]
            for call_id in ids:
                opened = CallOpen(call_id, "alice", "bob", start, caller_device="a1")
                recorder.open(opened, ringing_devices=1, relay_only=True)
            recorder.settled().result(60)
            for call_id in ids:
                recorder.answered(call_id, "bob", "b1", start, answer_at=start)
            recorder.settled().result(60)
            end = start + timedelta(seconds=1)
            for call_id in ids:
                recorder.ended(CallEnd(call_id, end, "answered", "hangup", "caller", "alice", 1.0))
            recorder.settled().result(60)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=2000, help="attempts per part and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the median is printed)")
    parser.add_argument("--burst", type=int, default=20, help="attempts per records batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="callgate-parts-") as tmp:
        parts: dict[str, Callable[[int], None]] = {
            "WebSocket framing (3 in, 8 out)": framing,
            "JSON (3 decoded, 8 encoded)": json_codec,
            "validation (parse_client_message x3)": validation,
            "engine (invite, answer, hangup; relay-only)": engine,
            "SDP (filter x2, also in the engine; the hub's x2)": sdp,
            "policy verdict with its read (SQLite)": policy(Path(tmp)),
            "thread hop (asyncio.to_thread)": thread_hop,
            "message queues (8 messages, 5 wake-ups)": message_queue,
            f"records (3 writes, batches of {args.burst})": records(Path(tmp), args.burst),
        }
        runs: dict[str, list[float]] = {name: [] for name in parts}
        for _ in range(args.rounds):
            for name, part in parts.items():
                part(max(1, args.attempts // 10))  # warm
                cpu = time.process_time()
                part(args.attempts)
                runs[name].append(1e6 * (time.process_time() - cpu) / args.attempts)
    print(f"CPU per call attempt, µs (median of {args.rounds} rounds of {args.attempts}; min):")
    for name, values in runs.items():
        print(f"{name:<48}{statistics.median(values):>9.1f}{min(values):>9.1f}")


if __name__ == "__main__":
    main()
