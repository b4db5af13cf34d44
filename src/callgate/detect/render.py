"""Text renderings of a report: JSON and CSV for SIEM import, and the rows of the terminal table."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime

from callgate.detect.report import FlowResult, Report, Session

CSV_FIELDS = (
    "host", "application", "peer", "sanctioned", "path", "media", "first_seen", "last_seen",
    "duration_s", "packets_out", "packets_in", "bytes_out", "bytes_in", "confidence", "flows",
    "protocols", "evidence",
)  # fmt: skip


_FLOW_FIELDS = FlowResult._fields


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def session_row(s: Session, when: Callable[[float], str] = iso) -> dict[str, object]:
    return {
        "host": s.host,
        "application": s.app,
        "peer": s.peer,
        "sanctioned": s.sanctioned,
        "path": s.path,
        "media": s.media,
        "first_seen": when(s.first_seen),
        "last_seen": when(s.last_seen),
        "duration_s": round(s.duration, 3),
        "packets_out": s.packets_out,
        "packets_in": s.packets_in,
        "bytes_out": s.bytes_out,
        "bytes_in": s.bytes_in,
        "confidence": round(s.confidence, 2),
        "flows": s.flows,
        "protocols": s.protocols,
        "evidence": s.evidence,
    }


def to_json(report: Report) -> str:
    """One document: summary, sessions (per host, application, peer) and every RTC flow."""
    times: dict[float, str] = {}  # a session's times are its flows' times: each written once

    def text(ts: float) -> str:
        found = times.get(ts)
        if found is None:
            found = times[ts] = iso(ts)
        return found

    flows = []
    for f in report.rtc_flows:
        row: dict[str, object] = dict(zip(_FLOW_FIELDS, f, strict=True))
        row["first_seen"], row["last_seen"] = text(f.first_seen), text(f.last_seen)
        flows.append(row)
    document = {
        "summary": report.summary(),
        "sessions": [session_row(s, text) for s in report.sessions],
        "flows": flows,
    }
    # one line, by the standard library's C encoder (indent= takes its pure-Python encoder
    # before Python 3.13, a tenth of a large capture's run); `jq .` indents it for reading
    return json.dumps(document) + "\n"


def to_csv(report: Report) -> str:
    """One line per session; list fields joined with ';'."""
    import csv  # only for this format: start-up time of `callgate detect`

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for s in report.sessions:
        row = session_row(s)
        writer.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()})
    return out.getvalue()


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def table_rows(report: Report) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for s in report.sessions:
        rows.append((
            s.host, s.app + (" [sanctioned]" if s.sanctioned else ""), s.peer, s.path,
            ",".join(s.media) or "-", iso(s.first_seen)[:19].replace("T", " "),
            f"{s.duration:.1f}s", f"{s.packets_out}/{s.packets_in}",
            f"{human_bytes(s.bytes_out)}/{human_bytes(s.bytes_in)}", f"{s.confidence:.2f}",
            "; ".join(s.evidence[:2]) + (" …" if len(s.evidence) > 2 else ""),
        ))  # fmt: skip
    return rows


TABLE_HEADERS = ("host", "application", "peer", "path", "media", "first seen (UTC)", "duration",
                 "pkts out/in", "bytes out/in", "conf.", "evidence")  # fmt: skip
