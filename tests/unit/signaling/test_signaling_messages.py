"""Parsing client messages: every type, every limit, and the exact error codes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from callgate.signaling import ProtocolError, parse_client_message
from callgate.signaling import messages as m

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


def frame(**fields: Any) -> str:
    return json.dumps({"id": "r1", **fields})


def refused(text: str | bytes, **limits: int) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(text, **limits)
    return caught.value


@pytest.mark.parametrize(
    ("fields", "cls"),
    [
        ({"type": "call.invite", "to": "bob", "sdp": SDP}, m.Invite),
        ({"type": "call.answer", "call_id": "c", "sdp": SDP}, m.Answer),
        (
            {
                "type": "call.candidate",
                "call_id": "c",
                "candidate": {
                    "candidate": "candidate:1 1 udp 1 192.0.2.1 5 typ relay raddr 0.0.0.0 rport 0",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                    "usernameFragment": "abcd",
                },
            },
            m.Candidate,
        ),
        ({"type": "call.candidate", "call_id": "c", "candidate": {"candidate": ""}}, m.Candidate),
        ({"type": "call.reject", "call_id": "c"}, m.Reject),
        ({"type": "call.reject", "call_id": "c", "reason": "busy here"}, m.Reject),
        ({"type": "call.hangup", "call_id": "c"}, m.Hangup),
        ({"type": "call.media", "call_id": "c", "state": "failed"}, m.Media),
        (
            {
                "type": "call.media",
                "call_id": "c",
                "state": "connected",
                "local_candidate_type": "relay",
                "remote_candidate_type": "prflx",
                "codec": "opus",
            },
            m.Media,
        ),
        (
            {
                "type": "call.stats",
                "call_id": "c",
                "final": True,
                "streams": [
                    {
                        "kind": "audio",
                        "direction": "inbound",
                        "packets": 500,
                        "packets_lost": -2,
                        "jitter_ms": 3.5,
                        "rtt_ms": None,
                        "concealed_ratio": 0.01,
                    },
                    {"kind": "audio", "direction": "outbound", "packets": 510, "packets_lost": 0},
                ],
            },
            m.Stats,
        ),
        ({"type": "ping"}, m.Ping),
    ],
)
def test_every_client_message_parses(fields: dict[str, Any], cls: type) -> None:
    message = parse_client_message(frame(**fields))
    assert isinstance(message, cls)
    assert message.id == "r1"


def test_bytes_frames_parse_too() -> None:
    assert isinstance(parse_client_message(b'{"type":"ping","id":"x"}'), m.Ping)


def test_too_large_message() -> None:
    text = frame(type="call.invite", to="bob", sdp="a" * 70_000)
    error = refused(text)
    assert (error.code, error.id, error.message) == (
        "too-large",
        None,
        "message is over 65536 bytes",
    )
    assert refused('{"type":"ping","id":"x"}', max_bytes=10).code == "too-large"


def test_message_size_counts_utf8_bytes() -> None:
    text = json.dumps({"type": "ping", "id": "é" * 30}, ensure_ascii=False)
    assert len(text.encode()) == len(text) + 30
    parse_client_message(text, max_bytes=len(text) + 30)
    assert refused(text, max_bytes=len(text) + 29).code == "too-large"


def test_sdp_over_its_limit_is_too_large_and_keeps_the_id() -> None:
    error = refused(frame(type="call.invite", to="bob", sdp="v" * 16_385))
    assert (error.code, error.id) == ("too-large", "r1")
    assert error.message == "sdp: sdp is over 16384 bytes"
    parse_client_message(frame(type="call.invite", to="bob", sdp="v" * 16_384))
    assert refused(
        frame(type="call.answer", call_id="c", sdp="v" * 101), max_sdp_bytes=100
    ).code == ("too-large")


@pytest.mark.parametrize("text", ["", "{", "nul", '{"type": "ping", "id": "x"', "\x00"])
def test_bad_json(text: str) -> None:
    error = refused(text)
    assert error.code == "bad-json" and error.id is None


@pytest.mark.parametrize("text", ["[]", '"ping"', "42", "null"])
def test_json_that_is_not_an_object_is_bad_json(text: str) -> None:
    assert refused(text).code == "bad-json"


def test_deeply_nested_json_is_bad_json_not_a_crash() -> None:
    assert refused("[" * 30_000 + "]" * 30_000).code == "bad-json"


def test_unknown_type_keeps_the_id() -> None:
    error = refused(frame(type="call.transfer", call_id="c"))
    assert (error.code, error.id, error.message) == (
        "unknown-type",
        "r1",
        "unknown message type 'call.transfer'",
    )


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({}, "missing or non-string 'type'"),
        ({"type": 7}, "missing or non-string 'type'"),
        ({"type": "call.invite", "sdp": SDP}, "to: Field required"),
        (
            {"type": "call.invite", "to": "", "sdp": SDP},
            "to: String should have at least 1 character",
        ),
        ({"type": "call.invite", "to": "b" * 65, "sdp": SDP}, "to: String should have at most 64"),
        ({"type": "call.invite", "to": 5, "sdp": SDP}, "to: Input should be a valid string"),
        ({"type": "call.invite", "to": "bob", "sdp": SDP, "video": True}, "video: Extra inputs"),
        ({"type": "call.answer", "call_id": "c" * 65, "sdp": SDP}, "call_id: String should have"),
        ({"type": "call.media", "call_id": "c", "state": "ok"}, "state: Input should be"),
        (
            {
                "type": "call.media",
                "call_id": "c",
                "state": "connected",
                "local_candidate_type": "x",
            },
            "local_candidate_type: Input should be",
        ),
        (
            {"type": "call.candidate", "call_id": "c", "candidate": {"candidate": "a" * 1025}},
            "candidate.candidate: String should have at most 1024",
        ),
        (
            {"type": "call.candidate", "call_id": "c", "candidate": "x"},
            "candidate: Input should be",
        ),
        ({"type": "call.stats", "call_id": "c"}, "streams: Field required"),
        ({"type": "call.stats", "call_id": "c", "final": "yes", "streams": []}, "final: Input"),
        (
            {
                "type": "call.stats",
                "call_id": "c",
                "streams": [
                    {"kind": "audio", "direction": "inbound", "packets": 1, "packets_lost": 0}
                ]
                * 17,
            },
            "streams: List should have at most 16 items",
        ),
        (
            {
                "type": "call.stats",
                "call_id": "c",
                "streams": [
                    {"kind": "video", "direction": "inbound", "packets": 1, "packets_lost": 0}
                ],
            },
            "streams.0.kind: Input should be 'audio'",
        ),
        (
            {
                "type": "call.stats",
                "call_id": "c",
                "streams": [
                    {"kind": "audio", "direction": "inbound", "packets": -1, "packets_lost": 0}
                ],
            },
            "streams.0.packets: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_request_keeps_the_id_and_names_the_field(fields: dict[str, Any], where: str) -> None:
    error = refused(frame(**fields))
    assert (error.code, error.id) == ("bad-request", "r1")
    assert error.message.startswith(where), error.message


@pytest.mark.parametrize(
    ("request_id", "recovered"),
    [("r" * 64, "r" * 64), ("r" * 65, None), (7, None), ("", None), (None, None)],
)
def test_the_id_is_recovered_only_when_it_is_valid(request_id: Any, recovered: str | None) -> None:
    text = json.dumps({"type": "call.hangup", "id": request_id})
    error = refused(text)
    assert (error.code, error.id) == ("bad-request", recovered)


def test_server_messages_are_json_ready() -> None:
    candidate = m.IceCandidate(candidate="candidate:1 1 udp 1 192.0.2.1 5 typ relay", sdpMid="0")
    built = [
        m.ack_message("r1", call_id="c"),
        m.error_message(None, m.BAD_JSON, "invalid"),
        m.hello_message(
            handle="alice",
            display_name="Alice",
            device_id="d1",
            ice_servers=[{"urls": ["turn:192.0.2.1:3478"], "username": "u", "credential": "p"}],
            ice_transport_policy="relay",
        ),
        m.incoming_message("c", "alice", "Alice", SDP),
        m.ringing_message("c", 2),
        m.answered_message("c", SDP),
        m.candidate_message("c", candidate),
        m.ended_message("c", "hangup", "caller"),
        m.denied_message("c", "not allowed", "rule-1"),
    ]
    for message in built:
        assert json.loads(json.dumps(message)) == message
    hello = built[2]
    assert hello["protocol"] == 1
    assert hello["limits"] == {"max_message_bytes": 65536, "max_sdp_bytes": 16384}
    assert built[6]["candidate"] == {"candidate": candidate.candidate, "sdpMid": "0"}
