"""The detector against nDPI's verdicts on nDPI's own test captures, flow by flow.

nDPI is the reference, not ground truth (see docs/detection.md): where we disagree, the test checks
that the disagreement is one we can justify from the packets, and that we miss nothing nDPI calls
real-time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.detect import detect
from callgate.detect.ndpi import Pair, pair_flows, parse_out, score
from tests.integration.detect_support import pcaps_dir


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    result: list[Pair] = []
    for out in sorted((pcaps_dir() / "ndpi").glob("*.out")):
        capture = out.with_suffix("")
        result.extend(pair_flows(capture.name, parse_out(out), detect([capture]).flows))
    return result


def test_every_ndpi_flow_is_found_in_our_flow_table(pairs: list[Pair]) -> None:
    assert len(pairs) >= 90
    missing = [p for p in pairs if p.ours is None]
    assert not missing, missing


def test_agreement_with_ndpi_on_rtc_versus_not(pairs: list[Pair]) -> None:
    s = score(pairs)
    assert s.recall == 1.0  # every flow nDPI calls real-time, we do too
    assert s.agreement >= 0.97  # 94/96 (docs/detection.md, "Agreement with nDPI")
    assert s.precision >= 0.96


def test_each_disagreement_rests_on_media_evidence_nDPI_did_not_use(pairs: list[Pair]) -> None:
    for p in pairs:
        if p.agree:
            continue
        assert p.ours is not None and p.ours.rtc and not p.ndpi.rtc
        # nDPI stopped at "DTLS"; the packets carry a DTLS-SRTP offer, and the evidence says
        # how the handshake ended when it did not succeed.
        assert "DTLS-SRTP" in p.ours.protocols, (p.capture, p.ours)


def test_applications_we_name_never_contradict_ndpi(pairs: list[Pair]) -> None:
    named = [
        p for p in pairs if p.ndpi.app and p.ours and not p.ours.app.startswith("unidentified")
    ]
    assert len(named) >= 30
    for p in named:
        assert p.ours is not None and p.ours.app.startswith(p.ndpi.app or "?"), (p.capture, p)


def test_non_rtc_traffic_in_a_messenger_capture_stays_quiet(pairs: list[Pair]) -> None:
    quiet = [p for p in pairs if p.capture == "viber.pcap" and not p.ndpi.rtc]
    assert len(quiet) >= 20  # DNS, mDNS, TLS, QUIC, Viber's own TCP
    assert not [p for p in quiet if p.ours_rtc]


def test_webrtc_test_call_is_p2p_ice(tmp_path: Path) -> None:
    report = detect([pcaps_dir() / "stun-ice-testcall.pcap"])
    p2p = [s for s in report.sessions if s.path == "p2p"]
    assert p2p and all("ICE" in s.protocols for s in p2p)
    assert {s.host for s in report.sessions} == {"192.168.43.155"}
