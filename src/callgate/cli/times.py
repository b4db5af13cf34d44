"""Times given on the command line (`--since`, `--until` of `cdr list|export`, `recording
list`, `audit export`...): ISO 8601, UTC when it has no offset, or relative to now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from callgate.cli.output import fail

_RELATIVE = re.compile(r"-(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, option: str = "--since", now: datetime | None = None) -> datetime:
    """ISO 8601 (2026-03-01, 2026-03-01T09:30, …Z or +01:00) or relative: -90s, -30m, -1h,
    -2d. ValueError naming `option` for anything else."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{option}: not an ISO 8601 time (2026-03-01 or 2026-03-01T09:30) nor a relative "
            f"one (-30m, -1h, -2d): {text!r}"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def time_option(option: str, text: str | None) -> datetime | None:
    """`parse_time` for an option's value (None when not given); a bad one exits 2 naming it."""
    if text is None:
        return None
    try:
        return parse_time(text, option)
    except ValueError as exc:
        raise fail(str(exc)) from None
