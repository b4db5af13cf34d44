"""What the console's Trunks page and `GET /api/trunks` show of each trunk (docs/sip.md,
"Console"): its settings without secrets, and its state now — calls on it, attempts and refusals
at its limits since the server started, and whether it is refusing calls right now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from callgate.sip.edge import SipEdge
from callgate.sip.trunks import Trunk


def _reachable(edge: SipEdge, name: str) -> str:
    health = edge.pings.health.get(name)
    if health is None:
        return "not pinged"
    return "unknown" if health.up is None else "up" if health.up else "down"


def _options(edge: SipEdge, name: str) -> dict[str, Any] | None:
    health = edge.pings.health.get(name)
    if health is None:
        return None
    answered = health.last_answer_at
    return {
        "pings": health.pings,
        "answered": health.answered,
        "failures": health.failures,
        "last_status": health.last_status,
        "last_answer_at": (
            datetime.fromtimestamp(answered, UTC).isoformat() if answered is not None else None
        ),
        "rtt_ms": round(health.rtt_s * 1000, 1) if health.rtt_s is not None else None,
    }


def trunk_status(edge: SipEdge) -> list[dict[str, Any]]:
    return [_one(trunk, edge) for trunk in edge.trunks.all]


def _one(trunk: Trunk, edge: SipEdge) -> dict[str, Any]:
    limits = edge.trunk_limits
    active = limits.active[trunk.name]
    refusing = limits.refusing(trunk.name)
    state = "refusing" if refusing else "in use" if active else "idle"
    outbound = None if trunk.outbound is None else f"{trunk.outbound[0]}:{trunk.outbound[1]}"
    return {
        "name": trunk.name,
        "state": state,
        "calls": active,
        "max_calls": trunk.max_calls,
        "max_cps": trunk.max_cps,
        "max_calls_per_user": trunk.max_calls_per_user,
        "max_calls_per_user_hour": trunk.max_calls_per_user_hour,
        "attempts": {
            "inbound": limits.attempts[(trunk.name, "inbound")],
            "outbound": limits.attempts[(trunk.name, "outbound")],
        },
        "refused": {
            "calls": limits.refused[(trunk.name, "calls")],
            "rate": limits.refused[(trunk.name, "rate")],
            "users": limits.refused[(trunk.name, "user-calls")]
            + limits.refused[(trunk.name, "user-hour")],
            "unavailable": limits.refused[(trunk.name, "unavailable")],  # cluster store down
        },
        # OPTIONS pings (trunk_pings.py): "up", "down", "unknown" (none answered or failed
        # enough yet) or "not pinged" (no outbound, or options_interval 0)
        "reachable": _reachable(edge, trunk.name),
        "options": _options(edge, trunk.name),
        "addresses": sorted(trunk.addresses),
        "dids": len(trunk.dids),
        "ring_groups": sorted(set(trunk.did_groups.values())),  # groups its DIDs ring
        "outbound": outbound,
        "routes": list(trunk.routes) or (["any number"] if trunk.outbound else []),
        "dial_out_groups": sorted(trunk.dial_out_groups),
        "caller_id": trunk.caller_id,
        # how we authenticate towards the carrier; the username, never the password
        "carrier_auth": None if trunk.auth is None else {"username": trunk.auth.username},
        # media towards the carrier: "required" (SRTP with SDES only) or "off" (RTP offered)
        "srtp": "required" if trunk.srtp_required else "off",
    }
