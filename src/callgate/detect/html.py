"""A self-contained HTML report (no scripts, no external resources) with a timeline per host."""

from __future__ import annotations

from html import escape

from callgate.detect.render import human_bytes, iso
from callgate.detect.report import Report, Session

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:.9em;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0} .ok{color:#276738} .warn{color:#a33}
.tl{position:relative;height:1.4em;background:#f6f6f6;border:1px solid #ddd;min-width:40em}
.bar{position:absolute;top:0;height:100%;opacity:.85}
.bar.u{background:#c0392b} .bar.s{background:#27ae60}
small{color:#666}
"""


def to_html(report: Report) -> str:
    summary = report.summary()
    unsanctioned = [s for s in report.sessions if not s.sanctioned]
    hosts = summary["hosts_with_unsanctioned_rtc"]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>callgate detect: real-time communication report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Real-time communication found in packet captures</h1>",
        f"<p>Files: {escape(', '.join(report.files))}. {report.packets} packets, "
        f"{len(report.flows)} flows, {len(report.rtc_flows)} of them real-time.</p>",
        f"<p class={'warn' if unsanctioned else 'ok'}><b>{len(unsanctioned)}</b> unsanctioned "
        f"session(s) on {len(hosts) if isinstance(hosts, list) else 0} internal host(s); "
        f"{summary['sanctioned_sessions']} session(s) through allow-listed relays.</p>",
    ]
    for warning in report.warnings:
        parts.append(f"<p class=warn>Warning: {escape(warning)}</p>")
    parts.append(_timeline(report.sessions))
    parts.append(_table(report.sessions))
    parts.append("<p><small>Confidence: 0.95 application named by STUN attributes; 0.9 ICE checks, "
                 "DTLS-SRTP, SIP or Discord's IP Discovery; 0.8 RTP both ways; 0.6 STUN only or endpoint learned from "
                 "STUN; 0.3 statistical guess.</small></p></body></html>")  # fmt: skip
    return "\n".join(parts) + "\n"


def _timeline(sessions: list[Session]) -> str:
    """One bar per session, on a time axis per host (captures of one host share a scale)."""
    if not sessions:
        return "<p>No real-time traffic found.</p>"
    rows = ["<h2>Timeline</h2>",
            "<table><tr><th>host</th><th>application → peer</th><th>activity</th></tr>"]  # fmt: skip
    for host in dict.fromkeys(s.host for s in sessions):
        mine = [s for s in sessions if s.host == host]
        start = min(s.first_seen for s in mine)
        span = max(max(s.last_seen for s in mine) - start, 1e-3)
        rows.append(
            f"<tr><th colspan=3>{escape(host)}: {iso(start)} → {iso(start + span)}</th></tr>"
        )
        for s in mine:
            left = 100 * (s.first_seen - start) / span
            width = max(100 * s.duration / span, 0.5)
            kind = "s" if s.sanctioned else "u"
            title = f"{iso(s.first_seen)} - {iso(s.last_seen)} ({s.duration:.1f} s)"
            rows.append(
                f"<tr><td>{escape(s.host)}</td><td>{escape(s.app)} → {escape(s.peer)}</td>"
                f"<td><div class=tl><div class='bar {kind}' title='{escape(title)}' "
                f"style='left:{left:.2f}%;width:{width:.2f}%'></div></div></td></tr>"
            )
    rows.append("</table>")
    return "\n".join(rows)


def _table(sessions: list[Session]) -> str:
    head = ("host", "application", "peer", "sanctioned", "path", "media", "first seen (UTC)",
            "duration", "packets out/in", "bytes out/in", "confidence", "evidence")  # fmt: skip
    rows = ["<h2>Sessions</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for s in sessions:
        cells = (
            s.host, s.app, s.peer, "yes" if s.sanctioned else "no", s.path,
            ", ".join(s.media) or "-", iso(s.first_seen), f"{s.duration:.1f} s",
            f"{s.packets_out} / {s.packets_in}",
            f"{human_bytes(s.bytes_out)} / {human_bytes(s.bytes_in)}", f"{s.confidence:.2f}",
        )  # fmt: skip
        evidence = "<br>".join(escape(e) for e in s.evidence)
        rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells)
                    + f"<td>{evidence}</td></tr>")  # fmt: skip
    rows.append("</table>")
    return "\n".join(rows)
