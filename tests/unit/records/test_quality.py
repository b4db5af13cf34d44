"""The simplified G.107 E-model and the poor-call rule (pure)."""

from __future__ import annotations

import itertools

import pytest

from callgate.records.quality import StreamStats, assess, mos_from_r, r_factor


def stream(**changes: object) -> StreamStats:
    base: dict[str, object] = {
        "kind": "audio",
        "direction": "inbound",
        "packets": 1000,
        "packets_lost": 0,
        "jitter_ms": 0.0,
        "rtt_ms": 0.0,
        "concealed_ratio": 0.0,
    }
    base.update(changes)
    return StreamStats(**base)  # type: ignore[arg-type]


def test_perfect_conditions_score_about_4_4() -> None:
    verdict = assess(stream())
    assert verdict.mos == pytest.approx(4.4, abs=0.02)
    assert verdict.r_factor == pytest.approx(92.7, abs=0.1)
    assert (verdict.classification, verdict.poor_reasons) == ("good", ())


def test_mos_formula_endpoints() -> None:
    assert mos_from_r(-5) == 1.0
    assert mos_from_r(0) == 1.0
    assert mos_from_r(100) == 4.5
    assert mos_from_r(120) == 4.5
    assert mos_from_r(50) == pytest.approx(1 + 1.75 + 7e-6 * 50 * -10 * 50)
    assert mos_from_r(93.2) == pytest.approx(4.41, abs=0.01)


def test_loss_and_delay_lower_the_score() -> None:
    ten_percent = assess(stream(packets=900, packets_lost=100, rtt_ms=300.0))
    assert ten_percent.mos < 2.5 < assess(stream()).mos
    assert ten_percent.classification == "good"  # the rule is loss > 10 %, not >=
    worse = assess(stream(packets=880, packets_lost=120, rtt_ms=300.0))
    assert worse.mos < ten_percent.mos
    assert worse.classification == "poor" and worse.poor_reasons == ("loss",)


def test_monotonic_in_loss_and_delay() -> None:
    by_loss = [r_factor(loss / 100) for loss in range(0, 40, 2)]
    assert all(a > b for a, b in itertools.pairwise(by_loss))
    by_rtt = [r_factor(0.0, rtt_ms=float(rtt)) for rtt in range(0, 1000, 50)]
    assert all(a > b for a, b in itertools.pairwise(by_rtt))
    by_jitter = [r_factor(0.0, jitter_ms=float(j)) for j in range(0, 200, 10)]
    assert all(a > b for a, b in itertools.pairwise(by_jitter))


@pytest.mark.parametrize(
    ("changes", "reasons"),
    [
        ({"packets": 890, "packets_lost": 110}, ("loss",)),
        ({"packets": 900, "packets_lost": 100}, ()),  # exactly 10 % is not > 10 %
        ({"jitter_ms": 30.5}, ("jitter",)),
        ({"rtt_ms": 501.0}, ("rtt",)),
        ({"concealed_ratio": 0.08}, ("concealed",)),
        (
            {"packets_lost": 500, "jitter_ms": 40.0, "rtt_ms": 600.0, "concealed_ratio": 0.5},
            ("loss", "jitter", "rtt", "concealed"),
        ),
    ],
)
def test_poor_reasons(changes: dict[str, object], reasons: tuple[str, ...]) -> None:
    verdict = assess(stream(**changes))
    assert verdict.poor_reasons == reasons
    assert verdict.classification == ("poor" if reasons else "good")


def test_loss_rate_per_direction() -> None:
    assert stream(packets=90, packets_lost=10).loss_rate == pytest.approx(0.1)
    assert stream(direction="outbound", packets=100, packets_lost=10).loss_rate == 0.1
    assert stream(packets=100, packets_lost=-3).loss_rate == 0.0  # duplicates
    assert stream(packets=0, packets_lost=0).loss_rate == 0.0
    unknown = assess(stream(jitter_ms=None, rtt_ms=None, concealed_ratio=None))
    assert unknown.classification == "good"


@pytest.mark.parametrize(
    "changes", [{"direction": "sideways"}, {"packets": -1}, {"jitter_ms": -1.0}]
)
def test_invalid_stats_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        stream(**changes)
