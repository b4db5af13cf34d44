"""`callgate detect`'s own reading of its plain options (the typer command handles the rest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.detect.command import Args, parse_args


def test_plain_options_and_captures_in_any_order() -> None:
    parsed = parse_args(["a.pcap", "--internal", "10.0.0.0/8", "--internal=fd00::/8", "b.pcapng",
                         "--allow-relay", "203.0.113.10:3478", "--format=csv", "-o", "out.csv"])  # fmt: skip
    assert parsed == Args(
        captures=[Path("a.pcap"), Path("b.pcapng")],
        internal=["10.0.0.0/8", "fd00::/8"],
        relays=["203.0.113.10:3478"],
        fmt="csv",
        output=Path("out.csv"),
    )


@pytest.mark.parametrize(
    "args",
    [
        [],  # no capture: typer's usage error
        ["--help"],
        ["a.pcap", "--bogus"],
        ["a.pcap", "--format"],  # value missing
        ["a.pcap", "-o=x.json"],  # click reads "=x.json" here
        ["a.pcap", "--output="],
    ],
)
def test_anything_else_is_left_to_the_typer_command(args: list[str]) -> None:
    assert parse_args(args) is None
