"""What the console's Trunks page and `GET /api/trunks` show of each trunk (docs/sip.md,
"Console"): its settings without secrets, and its state now — calls on it, attempts and refusals
at its limits since the server started, and whether it is refusing calls right now."""

from __future__ import annotations

from typing import Any

from callgate.sip.edge import SipEdge
from callgate.sip.trunks import Trunk


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
        },
        "addresses": sorted(trunk.addresses),
        "dids": len(trunk.dids),
        "outbound": outbound,
        "routes": list(trunk.routes) or (["any number"] if trunk.outbound else []),
        "dial_out_groups": sorted(trunk.dial_out_groups),
        "caller_id": trunk.caller_id,
        # how we authenticate towards the carrier; the username, never the password
        "carrier_auth": None if trunk.auth is None else {"username": trunk.auth.username},
    }
