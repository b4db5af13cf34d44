"""A SIP phone dials a number through a trunk (docs/sip.md, "Dialling out").

The callee is a number, not a user, so the call does not go through the signaling hub: the edge
calls the carrier itself (a back-to-back user agent) and bridges the two RTP legs at the server,
payloads unchanged. Authorize first: no dial-out without a rule (the trunk's dial_out_groups),
emergency numbers always, flagged. The CDR and its `sip.dialout` audit entry are written before
the carrier is called (sip/dialout.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Callable

from callgate.media.anchor import Bridge
from callgate.media.dtmf import DtmfToTones
from callgate.media.rtp_leg import RtpLeg
from callgate.sip.attempts import disposition
from callgate.sip.dialout import DialOutRecords
from callgate.sip.edge import SipEdge
from callgate.sip.invite import InboundCall
from callgate.sip.message import SipResponse
from callgate.sip.outbound import OutboundCall
from callgate.sip.sdp import EVENTS_PT, KEY_SALT, Crypto, SdpError, audio_sdp, parse_audio
from callgate.sip.trunks import EMERGENCY, Trunks, normalise

log = logging.getLogger(__name__)


async def final_response(call: OutboundCall, sdp: bytes, contact: str) -> SipResponse | None:
    """The phone's final response to our INVITE (None: it never answered, Timer B)."""
    final: SipResponse | None = None
    async for reply in call.invite(sdp, contact):
        if reply.status >= 200:
            final = reply
    return final


class DialOut:
    def __init__(
        self,
        edge: SipEdge,
        trunks: Trunks,
        groups_of: Callable[[str], tuple[str, ...]],
        records: DialOutRecords,
        media_ip: str | None,
    ) -> None:
        self._edge = edge
        self._trunks = trunks
        self._groups_of = groups_of
        self._records = records
        self._media_ip = media_ip

    def target(self, call: InboundCall, dialled: str) -> tuple[str, bool] | None:
        """(number, emergency) when a phone dialled a number a trunk can take, else None."""
        if call.trunk is not None or call.credential is None or self._trunks.outbound is None:
            return None
        code = dialled.lstrip("+")
        if code in EMERGENCY:
            return code, True
        number = normalise(dialled)
        return (number, False) if number is not None else None

    async def run(self, call: InboundCall, number: str, emergency: bool) -> None:
        assert call.credential is not None
        groups_of, records = self._groups_of, self._records
        trunk = self._trunks.outbound
        assert trunk is not None
        handle = call.credential.handle
        # authorize: no dial-out without a rule; emergency numbers always (and flagged)
        if not emergency and not trunk.may_dial(await asyncio.to_thread(groups_of, handle)):
            call.reject(403, "Forbidden (no dial-out rule for this user)")
            return
        if emergency:
            log.warning(
                "sip: emergency call from %s to %s via trunk %s", handle, number, trunk.name
            )
        try:
            offer = parse_audio(call.request.body)
            codec = offer.choose()
        except SdpError as exc:
            call.reject(488, f"Not Acceptable Here ({exc})")
            return
        media_ip = self._media_ip or call.peer.local[0]
        if ipaddress.ip_address(media_ip).is_unspecified or ":" in media_ip:
            call.reject(503, "Service Unavailable (no media address)")
            return
        ours = (
            None
            if offer.crypto is None
            else Crypto(offer.crypto.tag, secrets.token_bytes(KEY_SALT))
        )
        srtp = (
            None if offer.crypto is None or ours is None else (offer.crypto.key_salt, ours.key_salt)
        )
        bridge = Bridge(lambda: [])
        # RFC 4733 events: offered to the carrier when the phone offered them; passed on as
        # events if the carrier takes them, else as tones (media/dtmf.py)
        events = EVENTS_PT if offer.events is not None else None
        tones = DtmfToTones(codec, offer.events, bridge.forward) if offer.events else None
        from_phone = bridge.forward if tones is None else tones.packet
        phone = RtpLeg("phone", from_phone, codec, srtp, offer.events)
        carrier = RtpLeg("carrier", bridge.forward, codec)
        out = self._edge.dial(trunk, number, trunk.caller_id or handle)
        if out is None:
            call.reject(503, "Service Unavailable (no UDP listener for the trunk)")
            return
        record_id = out.call_id
        try:
            phone_local = await phone.open(media_ip)
            carrier_local = await carrier.open(media_ip)
            phone.set_remote((offer.address, offer.port), also_from=[call.peer.address[0]])
            bridge.attach(phone)
            bridge.attach(carrier)
            call.recorded = True  # recorded here, not by the hub
            await asyncio.to_thread(
                records.open, record_id, handle, number, trunk.name, emergency, call.peer.address[0]
            )
            contact = f"sip:callgate@{out.peer.local[0]}:{out.peer.local[1]}"
            final = asyncio.ensure_future(
                final_response(
                    out, audio_sdp(carrier_local[0], carrier_local[1], codec, None, events), contact
                )
            )
            call.ringing()
            phone_gone = asyncio.ensure_future(call.ended.wait())
            await asyncio.wait({final, phone_gone}, return_when=asyncio.FIRST_COMPLETED)
            if not final.done():  # the phone gave up (CANCEL) before the carrier answered
                await out.cancel()
                await final
                await asyncio.to_thread(
                    records.finish, record_id, "cancelled", "caller", "cancelled"
                )
                return
            phone_gone.cancel()
            reply = final.result()
            if reply is None or not 200 <= reply.status < 300:
                status, reason = (
                    (408, "Request Timeout") if reply is None else (reply.status, reply.reason)
                )
                call.reject(status, reason)
                await asyncio.to_thread(
                    records.finish, record_id, disposition(status), "callee", f"sip {status}"
                )
                return
            answer = parse_audio(reply.body)
            if events is not None and answer.events == events and tones is not None:
                carrier.events = events  # the carrier takes events: forwarded as they are
                tones.convert = False
            carrier.set_remote((answer.address, answer.port), also_from=[out.peer.address[0]])
            phone_answer = audio_sdp(phone_local[0], phone_local[1], codec, ours, offer.events)
            call.accept(phone_answer, contact)
            await asyncio.to_thread(records.answered, record_id)
            phone_ended = asyncio.ensure_future(call.ended.wait())
            carrier_ended = asyncio.ensure_future(out.ended.wait())
            await asyncio.wait({phone_ended, carrier_ended}, return_when=asyncio.FIRST_COMPLETED)
            phone_ended.cancel()
            carrier_ended.cancel()
            by = "caller" if call.ended.is_set() and call.ended_by != "us" else "callee"
            await (out.hang_up() if by == "caller" else call.hang_up())
            await asyncio.to_thread(records.finish, record_id, "answered", by, "hangup")
        except SdpError as exc:
            await out.hang_up()
            call.reject(502, "Bad Gateway (carrier SDP)")
            await asyncio.to_thread(records.finish, record_id, "failed", "server", str(exc)[:60])
        finally:
            self._edge.forget(out.call_id)
            await bridge.close()
