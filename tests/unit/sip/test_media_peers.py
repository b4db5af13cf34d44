"""Where the SIP edge may send media: the relay's peer filter judges every SDP address (default:
loopback, link-local with the cloud metadata address, private ranges refused), ports a phone's
RTP cannot use are refused, `sip.allow_media` and `turn.allow_peers` open ranges, and a
re-INVITE cannot move a call's media into a forbidden range (it can hold with c=0.0.0.0, as
any SDP can); an `a=rtcp` destination is judged like the RTP one."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.config import load_settings
from callgate.media.caller_fill import SilenceUntilMedia
from callgate.media.rtp_leg import ForbiddenDestination, RtpLeg
from callgate.runtime.sip import media_peers
from callgate.runtime.sip_reoffers import Reoffers
from callgate.sip.media_peers import ForbiddenMedia, MediaPeers, aim, refusal_headers
from callgate.sip.sdp import AudioOffer, SdpError, audio_sdp, parse_audio
from callgate.turn.peers import PeerFilter


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CALLGATE_"):
            monkeypatch.delenv(name)


def offer(address: str, port: int = 40000) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
    ).encode()


FORBIDDEN = ["127.0.0.1", "127.8.9.10", "169.254.169.254", "169.254.1.1", "10.0.0.5",
             "192.168.1.20", "172.16.0.1", "100.64.0.1", "0.0.0.1", "224.0.0.1",
             "255.255.255.255"]  # fmt: skip


@pytest.mark.parametrize("address", FORBIDDEN)
def test_the_default_refuses_internal_ranges_with_a_warning(address: str) -> None:
    media = MediaPeers(PeerFilter())
    with pytest.raises(ForbiddenMedia) as refused:
        media.check(parse_audio(offer(address)))
    assert str(refused.value) == f"media address {address} is not permitted"
    # RFC 3261 §20.43: warn-code, warn-agent, quoted text
    assert refusal_headers(refused.value) == [
        ("Warning", f'399 callgate "media address {address} is not permitted"')
    ]


def test_public_addresses_and_usable_ports_pass() -> None:
    media = MediaPeers(PeerFilter())
    for port in (1024, 40000, 65534):
        media.check(parse_audio(offer("203.0.113.7", port)))
    for port in (53, 123, 1023, 65535):  # system services; RTCP would need port + 1
        with pytest.raises(ForbiddenMedia, match=f"media port {port} is not permitted"):
            media.check(parse_audio(offer("203.0.113.7", port)))
    assert refusal_headers(SdpError("No audio stream")) == []  # other 488s carry no Warning


def test_settings_open_ranges_and_deny_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = media_peers(load_settings())
    assert not any(default.permits(a) for a in ("127.0.0.1", "169.254.169.254", "::1", "fe80::1"))
    # the relay's allowance (--allow-peer) opens it for SIP media too
    monkeypatch.setenv("CALLGATE_TURN__ALLOW_PEERS", "127.0.0.0/8")
    assert media_peers(load_settings()).permits("127.0.0.1")
    monkeypatch.delenv("CALLGATE_TURN__ALLOW_PEERS")
    # sip.allow_media opens a range for SIP alone (desk phones on a private LAN)
    monkeypatch.setenv("CALLGATE_SIP__ALLOW_MEDIA", "10.20.0.0/16, 127.0.0.1/32")
    monkeypatch.setenv("CALLGATE_TURN__DENY_PEERS", "10.20.30.0/24")
    opened = media_peers(load_settings())
    assert opened.permits("10.20.1.1") and opened.permits("127.0.0.1")
    assert not opened.permits("10.20.30.40")  # turn.deny_peers wins
    assert not opened.permits("127.0.0.2") and not opened.permits("169.254.169.254")


def test_a_device_names_only_its_own_address_unless_allow_media_covers_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLGATE_SIP__ALLOW_MEDIA", "198.51.100.0/24")
    media = media_peers(load_settings())
    media.check(parse_audio(offer("203.0.113.7")))  # a trunk's answer: any permitted address
    media.check(parse_audio(offer("203.0.113.7")), device="203.0.113.7")  # its own IP
    media.check(parse_audio(offer("198.51.100.9")), device="203.0.113.7")  # sip.allow_media
    with pytest.raises(ForbiddenMedia, match="not the device's signaling address") as refused:
        media.check(parse_audio(offer("203.0.113.8")), device="203.0.113.7")
    assert refusal_headers(refused.value) == [
        (
            "Warning",
            '399 callgate "media address 203.0.113.8 is not the device\'s signaling address"',
        )
    ]


def test_a_device_behind_nat_naming_its_private_address_is_sent_media_at_its_nat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its SDP names 192.168.1.20 (its LAN), its signaling comes from the NAT's 203.0.113.7:
    media goes to the NAT's address at the SDP's port, never into the private range; RTCP too.
    A range `sip.allow_media` covers is taken as named (a LAN the server reaches)."""
    media = media_peers(load_settings())
    body = offer("192.168.1.20", 40000) + b"a=rtcp:40003 IN IP4 192.168.1.20\r\n"
    aimed = media.check(parse_audio(body), device="203.0.113.7")
    assert (aimed.address, aimed.port, aimed.rtcp) == ("203.0.113.7", 40000, ("203.0.113.7", 40003))
    for inside in ("10.34.0.10", "172.20.0.4", "100.64.7.1"):  # RFC 1918, CGNAT
        assert (
            media.check(parse_audio(offer(inside)), device="203.0.113.7").address == "203.0.113.7"
        )
    # not a NAT's inside: still refused (link-local, loopback, another public host)
    for elsewhere in ("169.254.169.254", "127.0.0.1", "203.0.113.8"):
        with pytest.raises(ForbiddenMedia):
            media.check(parse_audio(offer(elsewhere)), device="203.0.113.7")
    # a trunk (no device) naming a private address is refused, as is a device whose own
    # signaling IP is itself forbidden (no public address to aim at)
    with pytest.raises(ForbiddenMedia, match="is not permitted"):
        media.check(parse_audio(offer("192.168.1.20")))
    with pytest.raises(ForbiddenMedia, match="is not permitted"):
        media.check(parse_audio(offer("192.168.1.20")), device="10.0.0.1")
    monkeypatch.setenv("CALLGATE_SIP__ALLOW_MEDIA", "192.168.1.0/24")
    lan = media_peers(load_settings())
    assert lan.check(parse_audio(offer("192.168.1.20")), device="203.0.113.7").address == (
        "192.168.1.20"
    )


def test_a_leg_refuses_a_forbidden_destination() -> None:
    leg = RtpLeg("phone", lambda packet: None, permits=PeerFilter().permits)
    with pytest.raises(ForbiddenDestination):
        leg.set_remote(("169.254.169.254", 40000))
    assert leg.remote is None and not leg.connected.is_set()
    with pytest.raises(ForbiddenDestination):  # RTCP elsewhere (a=rtcp) is judged too
        leg.set_remote(("203.0.113.7", 40000), rtcp=("127.0.0.1", 40001))


async def test_a_reoffer_cannot_move_media_into_a_forbidden_range() -> None:
    media = MediaPeers(PeerFilter(["127.0.0.1/32"]))
    first_body = offer("127.0.0.1", 40000)
    first = parse_audio(first_body)
    rtp = RtpLeg("phone", lambda packet: None, permits=media.permits)
    rtp.set_remote((first.address, first.port))
    fill = SilenceUntilMedia("phone", "pcmu", lambda packet: None)
    local = ("127.0.0.1", 30000)
    reoffers = Reoffers(first, first_body, "pcmu", None, local, (1, 1), rtp, fill)
    reoffers.check = media.check
    for address, port in (("169.254.169.254", 40000), ("10.0.0.1", 40000), ("127.0.0.1", 80)):
        with pytest.raises(ForbiddenMedia):
            reoffers.answer(offer(address, port).replace(b"o=- 1 1", b"o=- 1 2"))
        assert rtp.remote == ("127.0.0.1", 40000) and rtp.sending  # unchanged (RFC 3261 §14.2)
    # RFC 2543 hold (c=0.0.0.0), which RFC 3264 §8.4 says an answerer must take: nothing is
    # sent, and the destination stays where it was
    held = reoffers.answer(offer("0.0.0.0").replace(b"o=- 1 1", b"o=- 1 3"))
    assert held == audio_sdp(*local, "pcmu", None, None, "sendrecv", (1, 2))
    assert rtp.remote == ("127.0.0.1", 40000) and not rtp.sending
    # resumed at an allowed address
    reoffers.answer(offer("127.0.0.1", 40002).replace(b"o=- 1 1", b"o=- 1 4"))
    assert rtp.remote == ("127.0.0.1", 40002) and rtp.sending


def test_a_held_stream_passes_and_is_sent_nothing() -> None:
    """c=0.0.0.0 in an offer or an answer (RFC 3264 §8.4): taken, even from a device, and the
    leg sends nothing while still taking the party's packets from its signaling IP."""
    media = MediaPeers(PeerFilter())
    held = parse_audio(offer("0.0.0.0"))
    media.check(held)
    media.check(held, device="203.0.113.7")
    rtp = RtpLeg("phone", lambda packet: None, permits=media.permits)
    aim(rtp, held, ["203.0.113.7"])
    assert rtp.remote is None and not rtp.sending and rtp.allowed == ("203.0.113.7",)
    aim(rtp, parse_audio(offer("203.0.113.7")), rtp.allowed)  # resumed
    assert rtp.remote == ("203.0.113.7", 40000)


def test_an_a_rtcp_destination_is_judged_like_the_rtp_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLGATE_SIP__ALLOW_MEDIA", "198.51.100.0/24")
    media = media_peers(load_settings())

    def rtcp(line: str) -> AudioOffer:
        return parse_audio(offer("203.0.113.7") + f"a=rtcp:{line}\r\n".encode())

    media.check(rtcp("40009"), device="203.0.113.7")
    media.check(rtcp("40009 IN IP4 198.51.100.9"), device="203.0.113.7")  # sip.allow_media
    media.check(rtcp("65535"))  # RTCP alone may take the last port
    with pytest.raises(ForbiddenMedia, match=r"RTCP address 169.254.169.254 is not permitted"):
        media.check(rtcp("40009 IN IP4 169.254.169.254"))
    with pytest.raises(ForbiddenMedia, match=r"RTCP address 203.0.113.8 is not the device's"):
        media.check(rtcp("40009 IN IP4 203.0.113.8"), device="203.0.113.7")
    with pytest.raises(ForbiddenMedia, match=r"RTCP address 0.0.0.0 is not permitted"):
        media.check(rtcp("40009 IN IP4 0.0.0.0"))  # only the stream's c= line holds
    with pytest.raises(ForbiddenMedia, match="RTCP port 53 is not permitted"):
        media.check(rtcp("53"))
    rtp = RtpLeg("phone", lambda packet: None, permits=media.permits)
    aim(rtp, rtcp("40009 IN IP4 198.51.100.9"), ["203.0.113.7"])
    assert rtp.remote == ("203.0.113.7", 40000) and rtp.sending
