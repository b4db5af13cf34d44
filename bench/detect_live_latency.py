"""How soon a call on the wire is in `callgate serve --monitor`'s findings (root).

Builds two network namespaces joined by a veth, starts `callgate serve --monitor va` in one, and
replays a real capture (nDPI's Skype conference call, 200 Ethernet frames over 1.5 s) onto the
other end with Debian's `tcpreplay`, at the capture's own pace, --rounds times. Each round the
capture's internal host is rewritten to a new address (`tcprewrite --pnat`), so each round is a
new finding. For each round it prints the delay from the finding's first packet (its
`first_seen`: the kernel's receive time) to the moment the finding is in the database — what
`GET /api/findings` returns — first under any name, then under the capture's application
name; the console page polls the API every second, so it shows a finding at most 1 s later.
Also printed: the server's CPU time for the whole run.

    sudo .venv/bin/python bench/detect_live_latency.py [--rounds 5] [--interval 1.0]

Needs the shared captures ($CALLGATE_PCAPS or ../shared/pcaps) and tcpreplay (scripts/test
installs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.netns import Netns  # noqa: E402

from callgate.storage.db import DB_FILENAME  # noqa: E402
from serve_process import CLK_TCK, READY, callgate_binary  # noqa: E402

CAPTURE = "ndpi/skype-conference-call.pcap"
CAPTURE_HOST, APP = "192.168.2.20", "Microsoft Teams/Skype"


def captures() -> Path:
    for candidate in (os.environ.get("CALLGATE_PCAPS"), ROOT.parent / "shared" / "pcaps",
                      "/work/shared/pcaps"):  # fmt: skip
        if candidate and (Path(candidate) / CAPTURE).is_file():
            return Path(candidate)
    sys.exit(f"{CAPTURE} not found under $CALLGATE_PCAPS, ../shared/pcaps or /work/shared/pcaps")


def rewritten(source: Path, host: str, work: Path) -> Path:
    out = work / f"{host}.pcap"
    subprocess.run(["tcprewrite", f"--pnat={CAPTURE_HOST}/32:{host}/32", "--fixcsum",
                    f"--infile={source}", f"--outfile={out}"], check=True)  # fmt: skip
    return out


def findings_of(database: Path, host: str) -> list[tuple[str, str]]:
    """(app, first_seen) of the host's findings, read the way the API reads them."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            query = "SELECT app, first_seen FROM detect_findings WHERE host = ?"
            return [(str(a), str(f)) for a, f in db.execute(query, (host,))]
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return []


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def one_round(lab: Netns, ns: str, capture: Path, database: Path, host: str) -> tuple[float, float]:
    """(first packet → any finding of the host, first packet → the named finding), seconds."""
    replay = subprocess.Popen(lab.exec_argv(ns, "tcpreplay", "-q", "--intf1=vb", str(capture)),
                              stdout=subprocess.DEVNULL)  # fmt: skip
    deadline, seen_any = time.monotonic() + 60, None
    try:
        while time.monotonic() < deadline:
            found = findings_of(database, host)
            now = time.time()
            if found and seen_any is None:
                seen_any = now - min(seconds(f) for _, f in found)
            named = [f for app, f in found if app == APP]
            if named:
                assert seen_any is not None
                return seen_any, now - seconds(named[0])
            time.sleep(0.02)
        raise SystemExit(f"no {APP} finding for {host} within 60 s")
    finally:
        replay.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0, help="monitor.interval_s")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: network namespaces and AF_PACKET")
    for tool in ("tcpreplay", "tcprewrite"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} missing: apt-get install tcpreplay")
    source = captures() / CAPTURE
    lab = Netns(f"cgl{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="cg-live-") as tmp:
        work = Path(tmp)
        a, b = lab.add("a"), lab.add("b")
        lab.veth(a, "va", b, "vb")
        config = work / "callgate.toml"
        config.write_text(f'[monitor]\ninternal = ["10.77.0.0/24"]\ninterval_s = {args.interval}\n')
        log = (work / "serve.log").open("w+")
        argv = lab.exec_argv(a, callgate_binary(), "serve", "--config", str(config),
                             "--data-dir", str(work / "data"), "--http", "127.0.0.1:18080",
                             "--listen", "127.0.0.1:3478", "--monitor", "va")  # fmt: skip
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while READY not in (work / "serve.log").read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("serve did not start:\n" + (work / "serve.log").read_text())
                time.sleep(0.1)
            database = work / "data" / DB_FILENAME
            cpu_before = server_cpu(server.pid)
            rows = []
            for k in range(1, args.rounds + 1):
                host = f"10.77.0.{k}"
                rows.append(one_round(lab, b, rewritten(source, host, work), database, host))
            cpu = server_cpu(server.pid) - cpu_before
        finally:
            server.terminate()
            server.wait(30)
            lab.close()
    load = os.getloadavg()[0]
    print(f"capture: {CAPTURE} (200 frames, 1.5 s) replayed {args.rounds}x with tcpreplay; "
          f"monitor.interval_s = {args.interval}; load average {load:.1f}")  # fmt: skip
    print(f"{'round':>5}  {'first packet -> stored (s)':>26}  {'-> named ' + APP + ' (s)':>36}")
    for k, (any_, named) in enumerate(rows, 1):
        print(f"{k:>5}  {any_:>26.2f}  {named:>36.2f}")
    for label, column in (("median", statistics.median), ("max", max)):
        print(f"{label:>6} {column(r[0] for r in rows):>26.2f}  "
              f"{column(r[1] for r in rows):>36.2f}")  # fmt: skip
    print(
        f"serve CPU during the rounds: {cpu:.2f} s; the console shows a stored finding within "
        "its 1 s poll"
    )


if __name__ == "__main__":
    main()
