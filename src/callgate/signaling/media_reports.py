"""What the parties report once a call is set up: trickled ICE candidates, media reaching
(or failing to reach) them, and their stats — which feed the silence watchdog and the quality
records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from callgate.signaling import messages as m
from callgate.signaling.effects import CdrUpdate, Effect, Send, StatsReport, records_first
from callgate.signaling.engine_base import EngineBase, Refusal
from callgate.signaling.model import Call, State
from callgate.signaling.reasons import EndedBy, Party, Reason
from callgate.signaling.sdp import filter_candidate


class MediaReports(EngineBase):
    def candidate(
        self, device_id: str, request_id: str, call_id: str, candidate: m.IceCandidate
    ) -> list[Effect]:
        """Forward a trickled candidate to the other party (every ringing device before answer)."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            self._require_active(call, party, device)
            if call.anchored:  # the hub gives it to the party's anchor leg
                targets = []
            elif party is Party.CALLEE:
                targets = [call.caller.device_id]
            elif call.callee is not None:
                targets = [call.callee.device_id]
            else:
                targets = list(call.ringing)
        except Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        forwarded = filter_candidate(candidate.candidate, call.relay_only, self.relay_addresses)
        if forwarded is None:
            return [Send(device_id, m.ack_message(request_id, forwarded=False))]
        message = m.candidate_message(
            call_id, candidate.model_copy(update={"candidate": forwarded})
        )
        return [
            Send(device_id, m.ack_message(request_id, forwarded=True)),
            *(Send(target, message) for target in targets),
        ]

    def media(
        self,
        device_id: str,
        request_id: str,
        call_id: str,
        state: Literal["connected", "failed"],
        local_type: str | None,
        remote_type: str | None,
        codec: str | None,
    ) -> list[Effect]:
        """A party's ICE/DTLS reached media (`connected`) or gave up (`failed`)."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            self._require_active(call, party, device)
            if call.state is State.RINGING:
                raise Refusal(m.CONFLICT, "the call has not been answered")
        except Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        ack = Send(device_id, m.ack_message(request_id))
        if state == "failed":
            reason = Reason.MEDIA_LOST if call.state is State.MEDIA else Reason.SETUP_FAILED
            return records_first([ack, *self._end(call, reason, EndedBy.SERVER)])
        side = call.side(party)
        before = (call.media_path(), call.codec())
        side.connected = True
        side.local_type = local_type or side.local_type
        side.remote_type = remote_type or side.remote_type
        side.codec = codec or side.codec
        both = call.caller_media.connected and call.callee_media.connected
        if call.state is State.CONNECTED and both:
            return [self._enter_media(call), ack]
        if call.state is State.MEDIA and (call.media_path(), call.codec()) != before:
            return [CdrUpdate(call_id, media_path=call.media_path(), codec=call.codec()), ack]
        return [ack]

    def _enter_media(self, call: Call) -> CdrUpdate:
        now = self._clock.monotonic()
        call.state = State.MEDIA
        call.caller_media.progress_mono = now
        call.callee_media.progress_mono = now
        return CdrUpdate(
            call.call_id,
            media_at=self._clock.wall(),
            media_path=call.media_path(),
            codec=call.codec(),
        )

    def stats(
        self,
        device_id: str,
        request_id: str,
        call_id: str,
        streams: Sequence[m.StreamStats],
        final: bool,
    ) -> list[Effect]:
        """Record a party's stats; inbound packets that stop increasing trip the silence watchdog."""
        device = self._presence.get(device_id)
        ended = self._ended.get(call_id)
        try:
            if ended is not None:
                party = ended.party_of(device_id) or self._not_found()
            else:
                call, party = self._find(device, call_id)
                self._require_active(call, party, device)
                if call.state is State.RINGING:
                    raise Refusal(m.CONFLICT, "the call has not been answered")
                inbound = sum(s.packets for s in streams if s.direction == "inbound")
                call.side(party).observe(inbound, self._clock.monotonic())
        except Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        report = StatsReport(call_id, device_id, party, self._clock.wall(), final, tuple(streams))
        return [report, Send(device_id, m.ack_message(request_id))]
