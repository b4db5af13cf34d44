"""Calls cross real NATs and firewalls: the lab's caller-site by callee-site matrix.

One lab for the module (see topology.py): every cell is a real call between two `callgate` CLI
softphones on hosts behind two different NAT routers, through `callgate serve` with direct paths
allowed. Each cell must carry both tones, use the path ICE must find (direct where the NATs let
packets through, relay where they cannot), and be on record with the same media path. Around it:
what our STUN server tells each site (srflx = the router's public address), two hosts on one LAN,
the relay-only policy, a site that cannot reach the relay at all (`setup-failed`, fast), and a
SIP desk phone behind a port-restricted NAT.

The matrix runs with recording-required rules on: the ten cells ICE could only relay are calls
that policy says must be recorded (matrix.ANCHORED), anchored by the server relay-only through
its TURN from behind every NAT kind; each must carry both tones, be on record as anchored, and
leave a recording that verifies and holds both parties' tones. The six cells with a direct path
stay plain end-to-end calls. One more recorded call runs on the relay-only server.

aioice (the client's ICE agent) nominates the first pair whose check succeeds, not the best one
(aggressive nomination), so where a direct path exists a relayed pair occasionally wins the race
under load. A cell that must be direct but came out relayed is therefore called again, up to
twice: it passes when a call of it went direct; every attempt must still carry audio.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from callgate.client.audio import dominant_frequency
from tests.cli_process import run_in_process as callgate
from tests.e2e.test_recording_e2e import channel_peak, read_stereo
from tests.lab.conftest import RunningLab
from tests.lab.matrix import (
    ANCHORED,
    Call,
    Cell,
    expected_path,
    matrix_schedule,
    print_table,
    row,
    run_calls,
)
from tests.lab.netns import IP, run
from tests.lab.phone import HANDLE, PHONE_TONE, LabPhone, audit_entry
from tests.lab.probes import stream_mapped, stun_mappings
from tests.lab.service import (
    CALLEE_TONE,
    CALLER_TONE,
    RECORDED,
    SETUP_TIMEOUT,
    CallOutcome,
    Softphone,
    start_answerer,
)
from tests.lab.topology import (
    KINDS,
    PHONE_NAT_UDP_TIMEOUT,
    RELAY_ONLY_HTTP,
    SERVER_RELAY,
    SIP_PORT,
    TLS_RELAY,
)

pytestmark = pytest.mark.timeout(600)

DIRECT_RETRIES = 2
TONE_TOLERANCE = 5.0  # Hz
CELLS = [(a, b) for a in KINDS for b in KINDS]


class Results:
    def __init__(self) -> None:
        self.cells: dict[Cell, list[CallOutcome]] = {}
        self.hairpin: CallOutcome | None = None
        self.failure: CallOutcome | None = None
        self.relay_only: CallOutcome | None = None
        self.tls: CallOutcome | None = None
        self.recorded: CallOutcome | None = None
        self.seconds = 0.0


async def _run_all(running: RunningLab) -> Results:
    lab, servers, root = running.lab, running.servers, running.root
    everything, relay_only = servers["all"], servers["relay"]
    extras: list[list[Call]] = [
        [(everything, "lan-1", "lan-2")],  # two hosts on one LAN
        [(everything, "symx", "lan-2")],  # the caller cannot reach the relay
        [(relay_only, "lan-1", "lan-2")],  # same LAN, but the policy says relay
        [(servers["tls"], "tls", "eim-b")],  # only TLS on TCP 443 gets out of the caller's site
        [(relay_only, *RECORDED)],  # recorded on the relay-only server
    ]
    cells, rounds = matrix_schedule(everything, KINDS, extras)
    outcomes = await run_calls(lab, rounds, root / "calls")
    results = Results()
    matrix = [
        o for o in outcomes
        if o.server == everything.name and o.caller.endswith("-a") and o.callee.endswith("-b")
    ]  # fmt: skip
    for cell, outcome in zip(cells, matrix, strict=True):
        results.cells[cell] = [outcome]
    others = [o for o in outcomes if o not in matrix]
    results.hairpin = next(o for o in others if o.caller == "lan-1" and o.server == "all")
    results.failure = next(o for o in others if o.caller == "symx")
    results.relay_only = next(o for o in others if o.server == "relay" and o.caller == "lan-1")
    results.recorded = next(o for o in others if o.server == "relay" and o.caller == RECORDED[0])
    results.tls = next(o for o in others if o.server == "tls")
    for attempt in range(DIRECT_RETRIES):
        again = [
            cell
            for cell, tries in results.cells.items()
            if expected_path(*cell) == "direct" and all(t.path != "direct" for t in tries)
        ]
        if not again:
            break
        calls = [(everything, f"{a}-a", f"{b}-b") for a, b in again]
        # each cell's -a and -b hosts are its own, so these calls can run at once
        redo = await run_calls(lab, [calls], root / f"again-{attempt}")
        for cell, outcome in zip(again, redo, strict=True):
            results.cells[cell].append(outcome)
    return results


@pytest.fixture(scope="module")
def results(running_lab: RunningLab) -> Results:
    started = time.monotonic()
    outcome = asyncio.run(_run_all(running_lab))
    outcome.seconds = time.monotonic() - started
    # the evidence, in the test's output (shown with -s, or with a failure)
    rows = [
        row(f"{a} -> {b}", "anchored" if (a, b) in ANCHORED else expected_path(a, b),
            outcome.cells[(a, b)])
        for a, b in CELLS
    ]  # fmt: skip
    for label, extra in (
        ("one LAN", outcome.hairpin),
        ("relay-only policy", outcome.relay_only),
        ("relay unreachable", outcome.failure),
        ("only TLS on 443", outcome.tls),
        ("recorded, relay-only policy", outcome.recorded),
    ):
        if extra is not None:
            rows.append(row(f"{extra.caller} -> {extra.callee} ({label})", "", [extra]))
    print_table(rows)
    print(f"calls took {outcome.seconds:.0f} s")
    return outcome


def cdr(
    db: Path, call_id: str | None, *, linked: bool = True, within: float = 60
) -> dict[str, Any]:
    """The call's finalized CDR row (and, with `linked`, once relay sessions were linked)."""
    assert call_id, "the call has no call_id"
    deadline = time.monotonic() + within
    while True:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute("SELECT * FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        finally:
            conn.close()
        done = row is not None and row["end_at"] is not None
        if done and (not linked or row["relay_allocation_ids"] is not None):
            return dict(row)
        if time.monotonic() > deadline:
            raise AssertionError(f"CDR of {call_id} not finalized/linked: {row and dict(row)}")
        time.sleep(0.3)


def assert_heard_both_ways(outcome: CallOutcome) -> None:
    assert outcome.caller_code == 0 and outcome.reason == "hangup", outcome.describe()
    assert outcome.callee_reason == "hangup", outcome.describe()
    assert outcome.heard_by_callee is not None, outcome.describe()
    assert abs(outcome.heard_by_callee - CALLER_TONE) < TONE_TOLERANCE, outcome.describe()
    assert outcome.heard_by_caller is not None, outcome.describe()
    assert abs(outcome.heard_by_caller - CALLEE_TONE) < TONE_TOLERANCE, outcome.describe()


def assert_record_agrees(running: RunningLab, outcome: CallOutcome) -> dict[str, Any]:
    row = cdr(running.servers[outcome.server].db, outcome.call_id)
    assert row["disposition"] == "answered" and row["reason"] == "hangup", row
    # media_path is "<caller's local>/<callee's local>", as each client reported its pair
    assert row["media_path"] == outcome.types, (row["media_path"], outcome.describe())
    relayed = row["relay_bytes"] or 0
    if outcome.path == "relay":
        # 2 s of Opus both ways through at least one allocation: well over 10 kB
        assert relayed > 10_000 and row["relay_used"], row
    else:
        # connectivity checks only (a few hundred bytes per relay pair tried), no media
        assert relayed < 10_000, row
    return row


def test_the_lab_has_no_way_out(running_lab: RunningLab) -> None:
    lab = running_lab.lab
    inet = lab.net.full("inet")
    # the lab's "internet" routes only its own prefixes; nothing leads further
    assert run(IP, "-n", inet, "route", "show", "default").stdout.strip() == ""
    assert run(IP, "-n", inet, "route", "get", "8.8.8.8", check=False).returncode != 0
    for site in lab.sites:
        routes = run(IP, "-n", lab.net.full(f"r-{site.name}"), "route", "show", "default")
        assert "via 198.51.100.1 " in routes.stdout, routes.stdout
    ours = run(IP, "link", "show").stdout
    assert lab.net.prefix not in ours, "a lab interface leaked into the host's namespace"


@pytest.mark.parametrize("kind", ["eim", "prc", "sym"])
def test_srflx_discovery_gives_the_routers_public_address(
    running_lab: RunningLab, kind: str
) -> None:
    lab = running_lab.lab
    handle = f"{kind}-a"
    site = lab.site(handle)
    probe = stun_mappings(lab, handle, f"{SERVER_RELAY}:3478", f"{SERVER_RELAY}:443")
    (ip1, port1), (ip2, port2) = probe["mapped"]
    assert ip1 == ip2 == site.wan_ip, probe
    if kind == "sym":
        # a new mapping for every destination (address-and-port-dependent mapping)
        assert port1 != port2, probe
    else:
        # one mapping for every destination, the host's own port kept
        assert port1 == port2 == probe["local_port"], probe


def test_the_firewall_passes_stun_over_tcp_443_only(running_lab: RunningLab) -> None:
    lab = running_lab.lab
    probe = stun_mappings(lab, "fw-a", f"{SERVER_RELAY}:3478", f"{SERVER_RELAY}:443")
    assert probe["mapped"] == [None, None], probe  # no UDP at all
    assert stream_mapped(lab, "fw-a", f"turn:{SERVER_RELAY}:3478?transport=tcp") is None
    mapped = stream_mapped(lab, "fw-a", f"turn:{SERVER_RELAY}:443?transport=tcp")
    assert mapped is not None and mapped[0] == lab.site("fw-a").wan_ip, mapped


@pytest.mark.parametrize(("caller", "callee"), CELLS, ids=[f"{a}-to-{b}" for a, b in CELLS])
def test_matrix_cell(running_lab: RunningLab, results: Results, caller: str, callee: str) -> None:
    tries = results.cells[(caller, callee)]
    if (caller, callee) in ANCHORED:  # a recording-required rule covers the cell
        (outcome,) = tries
        assert_heard_both_ways(outcome)
        assert_recorded(running_lab, outcome, running_lab.root / "exports")
        return
    for outcome in tries:
        assert_heard_both_ways(outcome)
        assert_record_agrees(running_lab, outcome)
    expected = expected_path(caller, callee)
    if expected == "relay":
        assert len(tries) == 1 and tries[0].path == "relay", tries[0].describe()
        if "fw" in (caller, callee):  # the firewalled side itself can only send via TURN/TCP
            fw_types = tries[0].caller_types if caller == "fw" else tries[0].callee_types
            assert fw_types is not None and fw_types[0] == "relay", tries[0].describe()
    else:
        direct = [t for t in tries if t.path == "direct"]
        assert direct, [t.describe() for t in tries]
        types = direct[0].caller_types, direct[0].callee_types
        # direct between two NATed hosts: from the host socket to the far side's mapping
        assert all(t is not None and t[0] == "host" and t[1] in ("srflx", "prflx") for t in types)


def test_two_hosts_on_one_lan_talk_host_to_host(running_lab: RunningLab, results: Results) -> None:
    outcome = results.hairpin
    assert outcome is not None
    assert_heard_both_ways(outcome)
    assert outcome.caller_types == ("host", "host"), outcome.describe()
    assert outcome.callee_types == ("host", "host"), outcome.describe()
    assert assert_record_agrees(running_lab, outcome)["media_path"] == "host/host"


def test_relay_only_policy_relays_even_on_one_lan(
    running_lab: RunningLab, results: Results
) -> None:
    outcome = results.relay_only
    assert outcome is not None
    assert_heard_both_ways(outcome)
    assert outcome.caller_types == ("relay", "relay"), outcome.describe()
    assert outcome.callee_types == ("relay", "relay"), outcome.describe()
    assert assert_record_agrees(running_lab, outcome)["media_path"] == "relay/relay"


def test_relay_unreachable_from_a_symmetric_site_fails_fast(
    running_lab: RunningLab, results: Results
) -> None:
    outcome = results.failure
    assert outcome is not None
    assert outcome.caller_code == 1, outcome.describe()
    assert outcome.reason == "setup-failed" and outcome.callee_reason == "setup-failed"
    assert outcome.caller_types is None and outcome.callee_types is None
    # answered → ended: the server's setup watchdog, not aiortc's ~60 s ICE failure
    assert outcome.answered_to_end_s is not None
    assert outcome.answered_to_end_s < SETUP_TIMEOUT + 20, outcome.describe()  # load-tolerant
    row = cdr(running_lab.servers["all"].db, outcome.call_id, linked=False)
    assert (row["disposition"], row["reason"], row["ended_by"]) == (
        "failed",
        "setup-failed",
        "server",
    ), row


def test_the_tls_site_gets_out_only_over_tls_on_443(running_lab: RunningLab) -> None:
    lab, tls = running_lab.lab, running_lab.servers["tls"]
    assert stun_mappings(lab, "tls", f"{TLS_RELAY}:3478")["mapped"] == [None]  # no UDP
    assert stream_mapped(lab, "tls", f"turn:{TLS_RELAY}:3478?transport=tcp") is None
    # plain TURN over TCP 443 (of the other servers) is dropped by the firewall
    assert stream_mapped(lab, "tls", f"turn:{SERVER_RELAY}:443?transport=tcp") is None
    mapped = stream_mapped(lab, "tls", f"turns:{TLS_RELAY}:443?transport=tcp", tls.client_env())
    assert mapped is not None and mapped[0] == lab.site("tls").wan_ip, mapped


def test_a_call_from_the_tls_only_site_relays_over_turns_with_both_tones(
    running_lab: RunningLab, results: Results
) -> None:
    outcome = results.tls
    assert outcome is not None
    assert_heard_both_ways(outcome)
    assert outcome.caller_types is not None and outcome.caller_types[0] == "relay"
    row = assert_record_agrees(running_lab, outcome)
    assert row["media_path"].startswith("relay/"), row
    # the caller's allocation was made over TLS (the server's hello offered turns:…:443)
    conn = sqlite3.connect(f"file:{running_lab.servers['tls'].db}?mode=ro", uri=True, timeout=5)
    try:
        ids = json.loads(row["relay_allocation_ids"])
        marks = ",".join("?" * len(ids))
        transports = conn.execute(
            f"SELECT user, transport FROM relay_sessions WHERE allocation_id IN ({marks})",
            ids,
        ).fetchall()
    finally:
        conn.close()
    assert ("tls", "tls") in transports, transports
    assert all(transport == "tls" for user, transport in transports if user == "tls"), transports


def assert_recorded(running: RunningLab, outcome: CallOutcome, workdir: Path) -> None:
    """A call under a recording-required rule: both parties were told and reached the server's
    anchor through the relay, the CDR says recorded and anchored, and the recording closes,
    exports, verifies offline and holds the caller's tone left and the callee's right."""
    server = running.servers[outcome.server]
    for party in (outcome.caller, outcome.callee):
        names = [e.get("event") for e in outcome.events[party]]
        assert "recording" in names, outcome.describe()
    assert outcome.caller_types is not None and outcome.caller_types[0] == "relay"
    assert outcome.callee_types is not None and outcome.callee_types[0] == "relay"
    row = cdr(server.db, outcome.call_id, linked=False)
    assert (row["recording_required"], row["anchored"]) == (1, 1), row
    assert (row["disposition"], row["reason"]) == ("answered", "hangup"), row

    store = ("--data-dir", str(server.data_dir))
    cwd = running.root
    deadline = time.monotonic() + 60  # the recording closes just after the call (generous)
    while True:
        shown = callgate("recording", "show", str(outcome.call_id), "--json", *store, cwd=cwd)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        if json.loads(shown.stdout)["state"] != "open":
            break
        assert time.monotonic() < deadline, "the recording did not close"
        time.sleep(0.3)
    assert json.loads(shown.stdout)["state"] == "closed", shown.stdout
    bundle = workdir / f"{outcome.server}-{outcome.caller}--{outcome.callee}"
    exported = callgate("recording", "export", str(outcome.call_id), "--out", str(bundle),
                        *store, cwd=cwd)  # fmt: skip
    assert exported.returncode == 0, exported.stdout + exported.stderr
    verified = callgate("recording", "verify", str(bundle), cwd=cwd)
    assert verified.returncode == 0, verified.stdout
    samples, rate = read_stereo(bundle / "audio.wav")
    talk = samples[rate // 2 :]  # the callee's tone comes after the ringing
    assert abs(channel_peak(talk[:, 0], rate) - CALLER_TONE) < TONE_TOLERANCE, outcome.describe()
    assert abs(channel_peak(talk[:, 1], rate) - CALLEE_TONE) < TONE_TOLERANCE, outcome.describe()


def test_a_recorded_call_on_the_relay_only_server_crosses_the_nats_and_verifies(
    running_lab: RunningLab, results: Results
) -> None:
    """From behind a symmetric NAT to behind a port-restricted one, under the relay-only
    server's recording-required rule (service.RECORDED): anchored like the matrix's recorded
    cells, under the default ICE policy."""
    outcome = results.recorded
    assert outcome is not None
    assert_heard_both_ways(outcome)
    assert_recorded(running_lab, outcome, running_lab.root / "exports")


def test_a_sip_phone_behind_a_port_restricted_nat_registers_stays_reachable_and_talks(
    running_lab: RunningLab,
) -> None:
    """Debian's baresip behind the `phone` site's port-restricted NAT, whose router forgets an
    idle UDP mapping after PHONE_NAT_UDP_TIMEOUT s. It registers through the NAT (RFC 3581: the
    binding is the router's public address and port, not the phone's LAN address), keeps the
    mapping open with its RFC 5626 keep-alives (STUN, at the Flow-Timer the edge answers its
    Outbound registration with), and after idling for several NAT timeouts is still reached:
    a softphone behind another NAT calls it, then it calls the softphone; both hear each other."""
    lab, server, root = running_lab.lab, running_lab.servers["relay"], running_lab.root
    work = root / "phone"
    work.mkdir()
    phone = LabPhone(lab, server, work)
    user = "eim-b"  # the callgate user it talks with, behind an endpoint-independent NAT

    async def calls(registered_at: float, sent: int) -> tuple[Softphone, CallOutcome, int]:
        answerer = await start_answerer(lab, server, user, 1, work)  # signs in meanwhile
        # idle (no REGISTER: its interval is 600 s) for 2.5 NAT timeouts before calling it
        await asyncio.sleep(
            max(0.0, registered_at + 2.5 * PHONE_NAT_UDP_TIMEOUT - time.monotonic())
        )
        kept = phone.sent_to_sip() - sent
        # the softphone calls the phone: our INVITE reaches it through the kept mapping
        heard = work / "softphone-heard.wav"
        caller = await Softphone.start(
            lab, server, user, "call", HANDLE, "--tone", str(CALLEE_TONE), "--record",
            str(heard), "--duration", "3", "--device", "lab",
        )  # fmt: skip
        await caller.wait_for(lambda e: e.get("event") == "ended", 60)
        code, errors = await caller.finish()
        out = CallOutcome(user, HANDLE, "relay", caller_code=code, stderr={user: errors})
        out.events = {user: caller.events}
        out.heard_by_caller = dominant_frequency(heard) if heard.exists() else None
        out.call_id = next((e.get("call_id") for e in caller.events if e.get("call_id")), None)
        # the phone calls the softphone's user
        phone.command("dial", f"sip:{user}@{RELAY_ONLY_HTTP}:{SIP_PORT}")
        connected = await answerer.wait_for(lambda e: e.get("event") == "connected", 60)
        assert connected is not None, (answerer.events, phone.log())
        await asyncio.sleep(3)  # media both ways
        phone.command("hangup")
        await answerer.wait_for(lambda e: e.get("event") == "ended", 30)
        await answerer.finish()
        return answerer, out, kept

    try:
        phone.start()
        details = audit_entry(server.db, "sip.register", f"sip:{server.sip_device['username']}")
        registered_at = time.monotonic()
        sent = phone.sent_to_sip()
        # rport/received (RFC 3581): the binding is the NAT's public mapping
        public = lab.site(HANDLE).wan_ip
        assert details["address"].startswith(f"{public}:"), details
        assert details["transport"] == "UDP", details
        answerer, out, kept = asyncio.run(calls(registered_at, sent))
    finally:
        phone.stop()
    # keep-alives kept the mapping: one every Flow-Timer (2 s) while idle, nothing else sent
    assert kept >= 3, (kept, phone.log())
    ended = [e for e in out.events[user] if e.get("event") == "ended"]
    assert out.caller_code == 0 and ended and ended[-1].get("reason") == "hangup", out.describe()
    connected = next(e for e in out.events[user] if e.get("event") == "connected")
    assert connected["codec"] == "pcmu", connected
    assert out.heard_by_caller is not None, out.describe()
    assert abs(out.heard_by_caller - PHONE_TONE) < TONE_TOLERANCE, out.describe()
    first, second = phone.decoded()[-2:]
    assert abs(dominant_frequency(first) - CALLEE_TONE) < TONE_TOLERANCE
    # the phone's call: answered, heard both ways, ended by the phone's BYE
    ended = [e for e in answerer.events if e.get("event") == "ended"]
    assert ended and ended[-1].get("reason") == "hangup", answerer.events
    assert ended[-1].get("ended_by") == "caller", answerer.events
    heard_by_user = dominant_frequency(work / f"{user}-heard.wav")
    assert abs(heard_by_user - PHONE_TONE) < TONE_TOLERANCE, answerer.events
    assert abs(dominant_frequency(second) - CALLEE_TONE) < TONE_TOLERANCE
    for call_id in (out.call_id, ended[-1].get("call_id")):
        row = cdr(server.db, call_id, linked=False)
        assert (row["disposition"], row["reason"]) == ("answered", "hangup"), row
