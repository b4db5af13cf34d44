"""`callgate detect` as a user runs it: the installed command on real captures."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from callgate.cli.app import app
from tests.cli_process import COMMAND, clean_env
from tests.integration.detect_support import pcaps_dir


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def detect(*args: str) -> Outcome:
    """`callgate detect …` in this process (the installed command is run once, below)."""
    result = CliRunner().invoke(app, ["detect", *args])
    return Outcome(result.exit_code, result.stdout, result.stderr)


def test_installed_command_prints_host_application_and_peer() -> None:
    capture = str(pcaps_dir() / "ndpi" / "whatsapp_voice_and_message.pcap")
    result = subprocess.run(
        [*COMMAND, "detect", capture], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "10.8.0.1" in result.stdout and "WhatsApp" in result.stdout
    assert "8 unsanctioned session(s) on 10.8.0.1" in result.stdout


def test_json_csv_and_html_reports(tmp_path: Path) -> None:
    capture = str(pcaps_dir() / "ndpi" / "stun_signal.pcapng")
    result = detect(capture, "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["summary"]["hosts_with_unsanctioned_rtc"] == ["192.168.12.169"]
    signal = [s for s in document["sessions"] if s["application"] == "Signal"]
    assert {s["path"] for s in signal} >= {"p2p", "relayed"}
    for session in signal:
        assert session["first_seen"].endswith("Z") and session["duration_s"] >= 0
        assert 0 < session["confidence"] <= 1 and session["evidence"]

    rows = list(csv.DictReader(io.StringIO(detect(capture, "--format", "csv").stdout)))
    assert len(rows) == len(document["sessions"])
    assert int(rows[0]["packets_out"]) > 0

    html = tmp_path / "report.html"
    result = detect(capture, "--format", "html", "--output", str(html))
    assert result.returncode == 0 and f"report written to {html}" in result.stderr
    page = html.read_text()
    assert "<h2>Timeline</h2>" in page and "Signal" in page
    assert "<script" not in page and "http" not in page.split("</style>")[1]  # self-contained


def test_internal_networks_choose_which_side_is_the_host() -> None:
    capture = str(pcaps_dir() / "ndpi" / "stun_msteams_unidir.pcapng")
    default = json.loads(detect(capture, "--format", "json").stdout)
    assert default["sessions"][0]["host"] == "10.0.0.1"
    flipped = json.loads(detect(capture, "--format", "json", "--internal", "52.0.0.0/8").stdout)
    assert flipped["sessions"][0]["host"] == "52.115.136.55"


def test_allow_listed_relay_turns_sessions_sanctioned() -> None:
    capture = str(pcaps_dir() / "ndpi" / "whatsapp_voice_and_message.pcap")
    result = detect(capture, "--format", "json", "--allow-relay", "31.13.73.48:3478")
    sessions = json.loads(result.stdout)["sessions"]
    sanctioned = [s for s in sessions if s["sanctioned"]]
    assert [s["peer"] for s in sanctioned] == ["31.13.73.48"]
    assert len(sessions) - len(sanctioned) == 7


def test_errors_are_clear_and_truncation_only_warns(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    result = detect(str(text))
    assert result.returncode == 1
    assert "not a pcap or pcapng file" in result.stderr

    assert detect(str(tmp_path / "missing.pcap")).returncode == 1
    bad = detect(str(text), "--allow-relay", "relay.example")
    assert bad.returncode == 2 and "--allow-relay" in bad.stderr
    assert detect(str(text), "--format", "xml").returncode == 2

    source = (pcaps_dir() / "ndpi" / "stun_signal.pcapng").read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(source[:-100])
    result = detect(str(cut))
    assert result.returncode == 0
    assert "warning:" in result.stderr and "truncated" in result.stderr
    assert "Signal" in result.stdout


def test_installed_command_reads_options_as_the_typer_command_does(tmp_path: Path) -> None:
    """The installed `callgate detect` parses ordinary options itself (fast start-up) and leaves
    the rest to typer: both give the same report, the same errors and the same help."""
    capture = str(pcaps_dir() / "ndpi" / "whatsapp_voice_and_message.pcap")
    options = ["--format=json", "--internal", "10.8.0.0/16", "--allow-relay", "31.13.73.48:3478"]
    out = tmp_path / "report.json"
    installed = subprocess.run([*COMMAND, "detect", capture, *options, "-o", str(out)],
                               capture_output=True, text=True, env=clean_env(), timeout=60)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert f"report written to {out}" in installed.stderr
    in_process = detect(capture, *options)
    assert json.loads(out.read_text()) == json.loads(in_process.stdout)

    for args, code, text in [
        (["--format", "xml"], 2, "--format: expected one of"),
        (["--bogus"], 2, "No such option"),
        (["--allow-relay"], 2, "requires an argument"),
    ]:
        result = subprocess.run([*COMMAND, "detect", capture, *args], capture_output=True,
                                text=True, env=clean_env(), timeout=60)  # fmt: skip
        assert result.returncode == code and text in result.stderr, (args, result.stderr)
    helped = subprocess.run([*COMMAND, "detect", "--help"], capture_output=True, text=True,
                            env=clean_env(), timeout=60)  # fmt: skip
    assert helped.returncode == 0 and "--allow-relay" in helped.stdout
