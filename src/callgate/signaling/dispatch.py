"""Route a parsed client message to the call engine (all but `call.invite`, which needs the
directory and policy first: the WebSocket layer looks those up and calls `CallEngine.invite`)."""

from __future__ import annotations

from callgate.signaling import messages as m
from callgate.signaling.effects import Effect, Send
from callgate.signaling.engine import CallEngine


def handle_message(engine: CallEngine, device_id: str, message: m.ClientMessage) -> list[Effect]:
    if isinstance(message, m.Answer):
        return engine.answer(device_id, message.id, message.call_id, message.sdp)
    if isinstance(message, m.Candidate):
        return engine.candidate(device_id, message.id, message.call_id, message.candidate)
    if isinstance(message, m.Reject):
        return engine.reject(device_id, message.id, message.call_id, message.reason)
    if isinstance(message, m.Hangup):
        return engine.hangup(device_id, message.id, message.call_id)
    if isinstance(message, m.Media):
        return engine.media(
            device_id,
            message.id,
            message.call_id,
            message.state,
            message.local_candidate_type,
            message.remote_candidate_type,
            message.codec,
        )
    if isinstance(message, m.Stats):
        return engine.stats(device_id, message.id, message.call_id, message.streams, message.final)
    if isinstance(message, m.Reattach):  # a call this node holds (signaling/cluster_takeover.py)
        return engine.reattach(device_id, message.id, message.call_id)
    if isinstance(message, m.Ping):
        return [Send(device_id, m.ack_message(message.id))]
    raise TypeError("call.invite needs the directory and policy: use CallEngine.invite()")
