"""Call setup time through `callgate serve`: invite → both sides have reported media connected.

Starts `callgate serve` on loopback (temporary data dir, free ports, relay-only policy — the
default — with users `alice` and `bob` added first by `callgate user add --password-stdin`), signs
both in, connects one `SignalingClient` each, and places N sequential calls alice → bob with two
aiortc `CallSession`s in this process. Each call is hung up as soon as both sides' `call.media
connected` has been acknowledged by the server.

Setup time is measured from the moment `CallSession.invite()` is entered (offer creation and ICE
gathering, i.e. the TURN allocation, included: what a user waits for after pressing "call") to
the later of the two `call.media connected` acks. The split per call:

  offer+gather   invite() entered → call.invite sent (createOffer + setLocalDescription; aiortc
                 gathers its relay candidate, one TURN Allocate round trip, before returning)
  invite→incoming  call.invite sent → callee has call.incoming (server: parse, CDR row, ring)
  answer+gather  call.incoming → call.answer sent (callee: setRemoteDescription, createAnswer,
                 setLocalDescription with its own TURN allocation)
  answer→caller  call.answer sent → caller has call.answered
  ICE caller / callee  caller: call.answered → its ICE completed; callee: call.answer sent → its
                 ICE completed (connectivity checks through both relays, nomination)
  DTLS caller / callee  ICE completed → connectionState connected (DTLS handshake, SRTP keys)
  report         last side connected → the server acked the last `call.media connected`

    .venv/bin/python bench/call_setup.py            # --quick (default): 20 calls
    .venv/bin/python bench/call_setup.py --calls 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callgate.client.call import CallSession
from callgate.client.signaling import SignalingClient
from serve_process import CallgateServe

PASSWORD = "bench-password-1"
SLOW_MS = 400.0
TARGET_P50_MS = 100.0
TARGET_P95_MS = 200.0


class TimedChannel:
    """A SignalingChannel that timestamps what a CallSession sends and when the server acks it."""

    def __init__(self, client: SignalingClient, marks: dict[str, float], side: str) -> None:
        self.client = client
        self.marks = marks
        self.side = side

    async def request(self, type: str, /, **fields: Any) -> dict[str, Any]:
        self.marks.setdefault(f"{self.side}:{type}:sent", time.perf_counter())
        reply = await self.client.request(type, **fields)
        self.marks.setdefault(f"{self.side}:{type}:ack", time.perf_counter())
        return reply

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        return await self.client.next_event(timeout)


@dataclass
class CallTiming:
    ok: bool
    marks: dict[str, float] = field(default_factory=dict)
    candidate_types: list[Any] = field(default_factory=list)
    error: str | None = None

    def span(self, start: str, end: str) -> float:
        return (self.marks[end] - self.marks[start]) * 1000

    @property
    def setup_ms(self) -> float:
        return (max(self.marks["a:call.media:ack"], self.marks["b:call.media:ack"])
                - self.marks["start"]) * 1000  # fmt: skip

    @property
    def from_sent_ms(self) -> float:
        return (max(self.marks["a:call.media:ack"], self.marks["b:call.media:ack"])
                - self.marks["a:call.invite:sent"]) * 1000  # fmt: skip

    def split(self) -> dict[str, float]:
        m = self.marks
        last_connected = max(m["a:connected"], m["b:connected"])
        last_ack = max(m["a:call.media:ack"], m["b:call.media:ack"])
        return {
            "offer+gather": self.span("start", "a:call.invite:sent"),
            "invite→incoming": self.span("a:call.invite:sent", "b:incoming"),
            "answer+gather": self.span("b:incoming", "b:call.answer:sent"),
            "answer→caller": self.span("b:call.answer:sent", "a:answered"),
            "ICE caller": self.span("a:answered", "a:ice"),
            "ICE callee": self.span("b:call.answer:sent", "b:ice"),
            "DTLS caller": self.span("a:ice", "a:connected"),
            "DTLS callee": self.span("b:ice", "b:connected"),
            "report": (last_ack - last_connected) * 1000,
        }


def watch(session: CallSession, marks: dict[str, float], side: str) -> None:
    """Timestamp ICE completion and connectionState connected on the peer connection."""

    def on_ice() -> None:
        if session.pc.iceConnectionState == "completed":
            marks.setdefault(f"{side}:ice", time.perf_counter())

    def on_state() -> None:
        if session.pc.connectionState == "connected":
            marks.setdefault(f"{side}:connected", time.perf_counter())

    session.pc.on("iceconnectionstatechange", on_ice)
    session.pc.on("connectionstatechange", on_state)


async def pump(client: SignalingClient, session: CallSession, marks: dict[str, float],
               side: str) -> None:  # fmt: skip
    while not session.ended.is_set():
        event = await client.next_event()
        if event.get("call_id") != session.call_id:
            continue
        if event.get("type") == "call.answered":
            marks.setdefault(f"{side}:answered", time.perf_counter())
        await session.handle(event)


async def both_reported(marks: dict[str, float], timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while "a:call.media:ack" not in marks or "b:call.media:ack" not in marks:
        if time.perf_counter() > deadline:
            raise TimeoutError("media not reported by both sides")
        await asyncio.sleep(0.002)


async def one_call(alice: SignalingClient, bob: SignalingClient, timeout: float) -> CallTiming:
    marks: dict[str, float] = {}
    caller = CallSession(TimedChannel(alice, marks, "a"), alice.hello)
    watch(caller, marks, "a")
    callee: CallSession | None = None
    tasks: list[asyncio.Task[None]] = []

    async def answer() -> None:
        nonlocal callee
        while True:
            event = await bob.next_event()
            if event.get("type") == "call.incoming":
                break
        marks["b:incoming"] = time.perf_counter()
        callee = CallSession(TimedChannel(bob, marks, "b"), bob.hello)
        watch(callee, marks, "b")
        await callee.accept(event)
        await pump(bob, callee, marks, "b")

    answering = asyncio.create_task(answer())
    tasks.append(answering)
    timing = CallTiming(ok=False, marks=marks)
    try:
        marks["start"] = time.perf_counter()
        await caller.invite("bob")
        tasks.append(asyncio.create_task(pump(alice, caller, marks, "a")))
        await both_reported(marks, timeout)
        timing.ok = True
        timing.candidate_types = [caller.candidate_types, callee and callee.candidate_types]
        await caller.hangup()
        await asyncio.wait_for(answering, 5)
    except Exception as exc:
        timing.error = f"{type(exc).__name__}: {exc}"
        await caller.hangup()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await caller.close()
        if callee is not None:
            await callee.close()
    return timing


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def drain(client: SignalingClient) -> None:
    """Drop events left over from the previous call (late call.ended etc.)."""
    while True:
        try:
            await client.next_event(timeout=0.02)
        except TimeoutError:
            return


async def run(args: argparse.Namespace) -> int:
    users = {"alice": PASSWORD, "bob": PASSWORD}
    # alice places every call: the per-account limit (30 attempts a minute) is lifted.
    unlimited = {"CALLGATE_CALLS__CALL_ATTEMPTS_PER_MINUTE": "10000"}
    with CallgateServe(users, keep=args.keep, extra_env=unlimited) as serve:
        print(f"server: {' '.join(serve.command)}", file=sys.stderr)
        alice_login = await SignalingClient.login(serve.url, "alice", PASSWORD)
        bob_login = await SignalingClient.login(serve.url, "bob", PASSWORD)
        alice = await SignalingClient.connect(serve.url, alice_login.token, "bench-caller")
        bob = await SignalingClient.connect(serve.url, bob_login.token, "bench-callee")
        policy = alice.hello.get("ice_transport_policy")
        print(f"ice_transport_policy: {policy}; ice_servers: "
              f"{[s['urls'] for s in alice.hello['ice_servers']]}", file=sys.stderr)  # fmt: skip
        timings: list[CallTiming] = []
        cpu0 = serve.cpu()
        wall0 = time.perf_counter()
        for n in range(args.warmup + args.calls):
            timing = await one_call(alice, bob, args.timeout)
            await drain(alice)
            await drain(bob)
            if n >= args.warmup:
                timings.append(timing)
            if args.verbose:
                state = f"{timing.setup_ms:7.1f} ms" if timing.ok else f"FAILED {timing.error}"
                print(f"call {n + 1 - args.warmup:3d}: {state}", file=sys.stderr)
            if args.pause:
                await asyncio.sleep(args.pause)
        wall = time.perf_counter() - wall0
        cpu = serve.cpu() - cpu0
        await alice.close()
        await bob.close()
        exit_code = serve.stop()
    return report(args, timings, cpu, wall, exit_code, policy)


def report(args: argparse.Namespace, timings: list[CallTiming], cpu: float, wall: float,
           exit_code: int | None, policy: Any) -> int:  # fmt: skip
    ok = [t for t in timings if t.ok]
    failed = [t for t in timings if not t.ok]
    print(f"\ncall setup through callgate serve ({policy} policy), {len(timings)} calls "
          f"(+{args.warmup} warm-up), {len(ok)} ok, {len(failed)} failed")  # fmt: skip
    if not ok:
        for t in failed[:5]:
            print(f"  error: {t.error}")
        return 1
    setup = [t.setup_ms for t in ok]
    sent = [t.from_sent_ms for t in ok]
    slow = sum(1 for v in setup if v > SLOW_MS)
    print(f"\n{'metric':<34} {'p50':>8} {'p95':>8} {'max':>8} {'mean':>8}")
    for name, values in (("setup ms (invite() → both media)", setup),
                         ("  from call.invite sent", sent)):  # fmt: skip
        print(f"{name:<34} {pct(values, .5):8.1f} {pct(values, .95):8.1f} {max(values):8.1f} "
              f"{statistics.fmean(values):8.1f}")  # fmt: skip
    print(f"\ncalls with setup > {SLOW_MS:.0f} ms: {slow}/{len(ok)} ({100 * slow / len(ok):.0f} %)")
    splits = [t.split() for t in ok]
    print(f"\n{'split (ms)':<18} {'p50':>8} {'p95':>8} {'max':>8}   {'p50 slow calls':>14}")
    slow_splits = [t.split() for t in ok if t.setup_ms > SLOW_MS]
    for key in splits[0]:
        values = [s[key] for s in splits]
        slow_part = (f"{pct([s[key] for s in slow_splits], .5):14.1f}" if slow_splits
                     else f"{'-':>14}")  # fmt: skip
        print(f"{key:<18} {pct(values, .5):8.1f} {pct(values, .95):8.1f} {max(values):8.1f}   "
              f"{slow_part}")  # fmt: skip
    pairs = {str(t.candidate_types) for t in ok}
    print(f"\nselected pairs (caller, callee): {', '.join(sorted(pairs))}")
    print(
        f"server CPU: {cpu:.2f} s over {wall:.1f} s wall ({1000 * cpu / len(timings):.1f} ms/call)"
    )
    p50, p95 = pct(setup, 0.5), pct(setup, 0.95)
    verdict = lambda good: "ok" if good else "MISSED"  # noqa: E731
    print(f"targets: p50 < {TARGET_P50_MS:.0f} ms {verdict(p50 < TARGET_P50_MS)}, "
          f"p95 < {TARGET_P95_MS:.0f} ms {verdict(p95 < TARGET_P95_MS)}")  # fmt: skip
    if exit_code not in (0, None):
        print(f"server exited with {exit_code}")
    for t in failed[:5]:
        print(f"  failed call: {t.error}")
    if args.json:
        data = {
            "calls": len(timings), "ok": len(ok), "failed": len(failed),
            "setup_ms": setup, "from_sent_ms": sent, "splits": splits,
            "p50_ms": p50, "p95_ms": p95, "max_ms": max(setup), "slow": slow,
            "server_cpu_s": cpu, "wall_s": wall,
        }  # fmt: skip
        args.json.write_text(json.dumps(data, indent=1))
    return 1 if failed or exit_code not in (0, None) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, help="calls to time (default: 20, the --quick preset)")
    parser.add_argument("--quick", action="store_true", help="20 calls (the default)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between calls")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-call setup limit, s")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--keep", type=Path, help="use (and keep) this data directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every call")
    args = parser.parse_args()
    if args.calls is None:  # --quick is the default preset
        args.calls = 20
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
