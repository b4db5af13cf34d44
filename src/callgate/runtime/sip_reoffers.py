"""A SIP party's re-INVITE offers in an answered call, the same for every dialog the edge has
(docs/sip.md, "Hold and session refresh"): a phone or trunk that called us, a phone we ring (for a
browser or CLI user, for the phone network, for a ring group) and the carrier of a dialled-out
call. The SIP side (200, 488, 491) is sip/reinvites.py's; here the session decision:

- the same offer again (a session refresh, RFC 4028) gets the same answer;
- a changed offer is taken if it still lists the call's codec and keeps the party's SRTP key: its
  address (checked like every media address, `check`) and its direction, answered by RFC 3264
  §6.1 (`sendonly`/`inactive` hold, §8.4, answered `recvonly`/`inactive`: nothing is sent to the
  party then). Our answer keeps its `o=` session id, the version one higher each time it changes
  (§8);
- while the party holds the call its side of the bridge is filled with silence
  (media/caller_fill.py), so the other party's media watchdog and a recorder's silence limit do
  not end the call: throughout while it says it sends nothing (`inactive`, `recvonly`; what it
  still sends is dropped), in the gaps of its music on hold while `sendonly` or at `c=0.0.0.0`
  (RFC 2543's hold); a re-INVITE that sends again (`sendrecv` at an address) ends the hold;
- another codec, another (or no, or new) SRTP key, or an SDP we cannot read: SdpError (488) and
  nothing changes (RFC 3261 §14.2). An SRTP call's answer carries our key, unchanged (a carrier
  we dialled with SDES, a phone's best-effort RFC 5939 offer: then with its `a=acfg`);
- no offer: our current SDP, as the offer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from callgate.media.caller_fill import SilenceUntilMedia
from callgate.media.rtp_leg import RtpLeg
from callgate.sip.media_peers import aim
from callgate.sip.sdp import DIRECTIONS, AudioOffer, Crypto, SdpError, audio_sdp, parse_audio


class Reoffers:
    """The session of one answered call as re-INVITEs change it (module doc). `first`/`body`:
    the party's SDP the call was set up with (its offer, or its answer to ours); `origin`: the
    `o=` session id and version of our SDP answering it (one above our offer's, when we offered
    several codecs and now answer with one)."""

    def __init__(
        self,
        first: AudioOffer,
        body: bytes,
        codec: str,
        ours: Crypto | None,
        local: tuple[str, int],
        origin: tuple[int, int],
        rtp: RtpLeg,
        fill: SilenceUntilMedia,
    ) -> None:
        self._first, self._codec, self._ours, self._local = first, codec, ours, local
        self._origin, self._rtp, self._fill = origin, rtp, fill
        # raises ForbiddenMedia for a destination media may not go to (media_peers.py)
        self.check: Callable[[AudioOffer], AudioOffer] | None = None
        self._last = body  # the party's SDP our current one answers
        self._answer = audio_sdp(local[0], local[1], codec, ours, first.events, origin=origin)

    def answer(self, body: bytes) -> bytes:
        if not body.strip():  # no offer: ours again, unchanged (its answer comes in the ACK)
            return self._answer
        offer = parse_audio(body)  # SdpError: 488, the session stays as it was
        if self._codec not in offer.ours():
            raise SdpError("the codec cannot change during the call")
        theirs = self._first.crypto
        if (offer.crypto is None) != (theirs is None) or (
            offer.crypto is not None and theirs is not None
            and offer.crypto.key_salt != theirs.key_salt
        ):  # fmt: skip
            raise SdpError("SRTP keys cannot change during the call")
        if body == self._last:
            return self._answer  # a session refresh (RFC 4028): nothing changes
        held = offer.held  # c=0.0.0.0, RFC 3264 §8.4: send it neither RTP nor RTCP
        if not held and self.check is not None:
            offer = self.check(offer)  # 488 with a Warning; the session stays as it was
        self._last = body
        direction = DIRECTIONS[offer.direction]
        if not held:
            aim(self._rtp, offer, self._rtp.allowed)
        self._rtp.sending = direction in ("sendrecv", "sendonly") and not held
        if offer.direction in ("recvonly", "inactive"):
            self._fill.hold(sends=False)  # it sends nothing now: silence, as while it rang
        elif held or offer.direction == "sendonly":
            self._fill.hold(sends=True)  # music on hold, perhaps: silence in its gaps
        else:
            self._fill.resume()
        events = self._first.events if offer.events == self._first.events else None
        self._origin = (self._origin[0], self._origin[1] + 1)
        local, ours = self._local, self._ours
        if ours is not None and offer.crypto is not None:  # our key, under this offer's tag
            # (RFC 4568 §5.1.2) and naming its RFC 5939 configuration, if it offers one (§3.6.2)
            ours = replace(ours, tag=offer.crypto.tag, acfg=offer.crypto.acfg)
        self._answer = audio_sdp(
            local[0], local[1], self._codec, ours, events, direction, self._origin
        )
        return self._answer
