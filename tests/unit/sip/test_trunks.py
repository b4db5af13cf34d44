"""E.164 normalisation of dialled and calling numbers, DID routing, and trunk settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from callgate.config import TrunkSettings, load_settings
from callgate.errors import ConfigError
from callgate.runtime.sip import _trunk
from callgate.sip.trunks import Trunk, Trunks, normalise


@pytest.mark.parametrize(
    ("written", "e164"),
    [
        ("+442071234567", "+442071234567"),
        ("+44 20 7123-4567", "+442071234567"),
        ("0044 (20) 7123.4567", "+442071234567"),
        ("+15551230000;npdi", "+15551230000"),
        ("02071234567", None),  # national: needs a per-trunk rule, not guessed
        ("+0123", None),
        ("+1234567890123456", None),  # 16 digits
        ("bob", None),
        ("+44\uff19001234567", None),  # a fullwidth 9: a deny rule for +449 would not see it
        ("+44\u0669001234567", None),  # an Arabic-Indic 9
    ],
)
def test_normalise(written: str, e164: str | None) -> None:
    assert normalise(written) == e164


def test_dids_route_by_any_spelling_and_trunks_by_address() -> None:
    trunk = Trunk("carrier", frozenset({"192.0.2.7"}), {"+15551230000": "bob"})
    assert trunk.route("+1 (555) 123-0000") == "bob"
    assert trunk.route("+15559999999") is None
    trunks = Trunks([trunk])
    assert trunks.by_address("192.0.2.7") is trunk and trunks.by_address("192.0.2.8") is None


def test_trunk_settings_refuse_bad_numbers_names_and_addresses() -> None:
    good = TrunkSettings(name="carrier", addresses=["192.0.2.7"], dids={"+15551230000": "bob"})
    assert good.addresses == ["192.0.2.7"]
    for bad in (
        {"name": "carrier", "addresses": ["192.0.2.7"], "dids": {"5551230000": "bob"}},
        {"name": "Carrier!", "addresses": ["192.0.2.7"]},
        {"name": "carrier", "addresses": ["carrier.example"]},
        {"name": "carrier", "addresses": []},
    ):
        with pytest.raises(ValidationError):
            TrunkSettings(**bad)  # type: ignore[arg-type]


def test_no_dial_out_without_a_rule() -> None:
    closed = Trunk("carrier", frozenset({"192.0.2.7"}), outbound=("192.0.2.7", 5060))
    assert not closed.may_dial(("traders",))
    open_to = Trunk("carrier", frozenset({"192.0.2.7"}), dial_out_groups=frozenset({"traders"}))
    assert open_to.may_dial(("sales", "traders")) and not open_to.may_dial(("sales",))
    assert Trunks([Trunk("in-only", frozenset({"192.0.2.8"})), closed]).outbound is closed


def test_the_dial_plan_picks_the_longest_route_and_the_carriers_format() -> None:
    uk = Trunk("uk", frozenset({"192.0.2.7"}), outbound=("192.0.2.7", 5060), routes=("+44",),
               country_code="44", number_format="national")  # fmt: skip
    london = Trunk("london", frozenset({"192.0.2.8"}), outbound=("192.0.2.8", 5060),
                   routes=("+4420",))  # fmt: skip
    rest = Trunk("world", frozenset({"192.0.2.9"}), outbound=("192.0.2.9", 5060))
    trunks = Trunks([uk, london, rest])
    to_london = trunks.dial("+44 20 7946 0000")
    assert to_london is not None and to_london.trunk is london
    assert to_london.carrier_number == "+442079460000"
    to_leeds = trunks.dial("0113 496 0000")  # national, read in the UK trunk's country
    assert to_leeds is not None and to_leeds.trunk is uk
    assert (to_leeds.number, to_leeds.carrier_number) == ("+441134960000", "01134960000")
    to_ny = trunks.dial("tel:+1 212 555 0100")
    assert to_ny is not None and to_ny.trunk is rest and to_ny.number == "+12125550100"
    sos = trunks.dial("999")
    assert sos is not None and sos.emergency and sos.carrier_number == "999"
    assert trunks.dial("tel:12") is None and trunks.dial("bob") is None
    assert Trunks([uk]).dial("+12125550100") is None  # no route
    assert Trunks([Trunk("in", frozenset({"192.0.2.1"}))]).dial("+442079460000") is None


def test_emergency_codes_are_the_trunks_countrys_not_every_countrys() -> None:
    uk = Trunk("uk", frozenset({"192.0.2.7"}), outbound=("192.0.2.7", 5060), country_code="44")
    assert Trunks([uk]).dial("999") is not None
    # 100 is India's police but the UK's chargeable operator (who connects onward calls):
    # through a UK trunk it is no emergency call, and an ordinary short number has no route
    assert Trunks([uk]).dial("100") is None
    us = Trunk("us", frozenset({"192.0.2.8"}), outbound=("192.0.2.8", 5060), country_code="1")
    assert Trunks([us]).dial("911") is not None and Trunks([us]).dial("999") is None
    anywhere = Trunk("any", frozenset({"192.0.2.9"}), outbound=("192.0.2.9", 5060))
    assert {c for c in ("112", "911", "999", "100") if Trunks([anywhere]).dial(c)} == {"112", "911"}
    own = Trunk("own", frozenset({"192.0.2.9"}), outbound=("192.0.2.9", 5060),
                emergency=frozenset({"112", "144"}))  # fmt: skip
    sos = Trunks([own]).dial("tel:144")
    assert sos is not None and sos.emergency and Trunks([own]).dial("911") is None
    settings = TrunkSettings(name="c", addresses=["192.0.2.9"], emergency=["112", "144"])
    assert settings.emergency == ["112", "144"]
    with pytest.raises(ValidationError):
        TrunkSettings(name="c", addresses=["192.0.2.9"], emergency=["1\uff112"])


def test_a_trunk_that_is_down_is_passed_over_for_another_that_carries_the_number() -> None:
    uk = Trunk("uk", frozenset({"192.0.2.1"}), outbound=("192.0.2.1", 5060), routes=("+44",),
               country_code="44")  # fmt: skip
    backup = Trunk("backup", frozenset({"192.0.2.2"}), outbound=("192.0.2.2", 5060),
                   routes=("+44",), country_code="44")  # fmt: skip
    us = Trunk("us", frozenset({"192.0.2.3"}), outbound=("192.0.2.3", 5060), routes=("+1",),
               country_code="1")  # fmt: skip
    plan = Trunks([uk, backup, us])
    dialled = plan.dial("+442079460000")
    assert dialled is not None and dialled.trunk is uk  # equal routes: the first configured
    fallback = plan.dial("+442079460000", down=lambda name: name == "uk")
    assert fallback is not None and fallback.trunk is backup  # it carries +44 too
    # nobody else carries +1: the down trunk is tried all the same
    only = plan.dial("+12125550100", down=lambda name: name == "us")
    assert only is not None and only.trunk is us
    everyone_down = plan.dial("+442079460000", down=lambda name: True)
    assert everyone_down is not None and everyone_down.trunk is uk
    # 999 is an emergency number on the first outbound trunk (UK) and on the backup (+44) but
    # not on the US trunk: with the UK trunk down it goes to the backup, never to the US one
    sos = plan.dial("999", down=lambda name: name in ("uk",))
    assert sos is not None and sos.emergency and sos.trunk is backup
    sos = plan.dial("999", down=lambda name: name in ("uk", "backup"))
    assert sos is not None and sos.trunk is uk


async def test_pings_mark_a_trunk_down_after_failures_and_up_at_the_next_answer() -> None:
    from callgate.clock import ManualClock
    from callgate.sip.message import SipResponse
    from callgate.sip.trunk_pings import TrunkPings, proves_up

    trunk = Trunk("uk", frozenset({"192.0.2.1"}), outbound=("192.0.2.1", 5060),
                  options_interval=10, options_failures=2)  # fmt: skip
    silent = Trunk("quiet", frozenset({"192.0.2.9"}), outbound=("192.0.2.9", 5060))  # no pings
    answers: list[SipResponse | None] = []
    audited: list[str] = []

    async def ping(target: Trunk, wait_s: float) -> SipResponse | None:
        assert target is trunk and wait_s == 5.0
        return answers.pop(0)

    async def audit(actor: str, action: str, obj: str, details: dict[str, object]) -> None:
        audited.append(f"{action} {obj}")

    def reply(status: int) -> SipResponse:
        from callgate.sip.message import Headers

        return SipResponse(status, "", Headers())

    pings = TrunkPings((trunk, silent), ping, ManualClock(), audit)
    assert set(pings.health) == {"uk"} and not pings.down("quiet")
    answers += [reply(405), None, reply(503), None, reply(200)]
    await pings.ping(trunk)  # 405 from a carrier without OPTIONS: it is there
    assert pings.health["uk"].up is True and audited == []  # the first answer: not a change
    await pings.ping(trunk)
    assert not pings.down("uk")  # one unanswered ping is not enough
    await pings.ping(trunk)  # a 503: there, but not taking calls
    assert pings.down("uk") and audited == ["sip.trunk.down trunk:uk"]
    await pings.ping(trunk)
    assert audited == ["sip.trunk.down trunk:uk"]  # once per change
    await pings.ping(trunk)
    assert not pings.down("uk") and audited[-1] == "sip.trunk.up trunk:uk"
    assert pings.summary() == {"ok": True, "critical": False, "pinged": 1, "down": 0}
    assert not proves_up(None) and proves_up(reply(401)) and not proves_up(reply(500))


def test_a_did_may_ring_a_group_and_settings_say_what_is_wrong() -> None:
    trunk = Trunk("carrier", frozenset({"192.0.2.7"}), {"+15551230000": "bob"},
                  did_groups={"+15551230002": "desk"})  # fmt: skip
    assert trunk.route_group("+1 555 123 0002") == "desk"
    assert trunk.route_group("+15551230000") is None and trunk.route("+15551230002") is None
    ok = TrunkSettings(name="c", addresses=["192.0.2.7"], did_groups={"+15551230002": "desk"})
    assert ok.did_groups == {"+15551230002": "desk"}
    with pytest.raises(ValidationError, match="is in both dids and did_groups"):
        TrunkSettings(name="c", addresses=["192.0.2.7"], dids={"+15551230002": "bob"},
                      did_groups={"+15551230002": "desk"})  # fmt: skip
    with pytest.raises(ValidationError, match=r"is not E\.164"):
        TrunkSettings(name="c", addresses=["192.0.2.7"], did_groups={"5551230002": "desk"})
    with pytest.raises(ValidationError, match="did_groups"):
        TrunkSettings(name="c", addresses=["192.0.2.7"], did_groups={"+15551230002": "a b"})


def test_a_trunks_srtp_setting_is_off_or_required_and_a_bad_value_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert TrunkSettings(name="c", addresses=["192.0.2.7"]).srtp == "off"
    config = tmp_path / "callgate.toml"
    config.write_text(
        '[sip]\nlisten = ["127.0.0.1:5060"]\n'
        '[[sip.trunks]]\nname = "c"\naddresses = ["192.0.2.7"]\nsrtp = "always"\n'
    )
    monkeypatch.delenv("CALLGATE_SIP__TRUNKS", raising=False)
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert str(refused.value) == (
        "invalid sip.trunks.srtp (CALLGATE_SIP__TRUNKS__SRTP): "
        "trunk 'c': \"off\" or \"required\", not 'always'"
    )
    config.write_text(config.read_text().replace('"always"', '"required"'))
    (trunk,) = load_settings(config).sip.trunks
    assert trunk.srtp == "required" and _trunk(trunk).srtp_required
    assert not _trunk(TrunkSettings(name="c", addresses=["192.0.2.7"])).srtp_required
