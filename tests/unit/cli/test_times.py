"""Times on the command line, one parser for every `--since`/`--until` (cdr list|export, audit
export, recording list): ISO 8601, UTC when it has no offset, or relative to now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import typer

from callgate.cli.times import parse_time, time_option

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-90s", NOW - timedelta(seconds=90)),
        ("-30m", NOW - timedelta(minutes=30)),
        (" -1.5h ", NOW - timedelta(hours=1.5)),
        ("-2d", NOW - timedelta(days=2)),
        ("2026-02-01", datetime(2026, 2, 1, tzinfo=UTC)),
        ("2026-02-01T09:30", datetime(2026, 2, 1, 9, 30, tzinfo=UTC)),
        ("2026-02-01T09:30:00Z", datetime(2026, 2, 1, 9, 30, tzinfo=UTC)),
        (
            "2026-02-01T09:30+01:00",
            datetime(2026, 2, 1, 9, 30, tzinfo=timezone(timedelta(hours=1))),
        ),
    ],
)
def test_iso_and_relative_times(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-1w", "1h", "--1h", "-h", ""])
def test_anything_else_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--until: not an ISO 8601 time .* nor a relative one"):
        parse_time(text, "--until", now=NOW)
    with pytest.raises(typer.Exit) as exited:
        time_option("--until", text)
    assert exited.value.exit_code == 2
    assert time_option("--until", None) is None
