"""Key presses by SIP INFO (RFC 2976; sip/dtmf_info.py) over real sockets: a phone's answered
call takes `application/dtmf-relay` and hands the key to the call (200); another body gets
`415` with Accept, a bad one `400`; the phone's INFO is digest-challenged (401) like its BYE
and a wrong password presses no key; an INFO from another host with the dialog's identifiers
`403`, one outside any dialog `481`; OPTIONS lists INFO in Allow."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callgate.accounts.service import AccountService
from callgate.records.audit import AuditLog
from callgate.sip.credentials import CredentialStore
from callgate.sip.edge import SipEdge
from callgate.sip.invite import InboundCall
from callgate.sip.message import SipResponse
from callgate.storage.db import open_store, sqlite_url
from tests.integration.sip_client import SipClient, authorization, challenge_for
from tests.integration.test_sip_edge import in_dialog, signed_bye

REALM = "callgate.test"


class Answering:
    """A call handler that answers at once and keeps the keys the call is given."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, int]] = []

    async def invite(self, call: InboundCall) -> None:
        def key(pressed: str, ms: int) -> bool:
            self.keys.append((pressed, ms))
            return True

        call.on_key = key
        sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        call.accept(sdp + b"m=audio 40000 RTP/AVP 0\r\n", "sip:callgate@127.0.0.1")
        await call.ended.wait()


def info(phone: SipClient, ok: SipResponse, port: int, content_type: str, body: bytes) -> bytes:
    request = in_dialog(phone, "INFO", ok, port).replace(
        b"Content-Length: 0\r\n\r\n",
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body,
    )
    return request


def signed_info(
    phone: SipClient, ok: SipResponse, port: int, content_type: str, body: bytes, user: str,
    password: str,
) -> tuple[SipResponse, SipResponse]:  # fmt: skip
    """The phone's INFO, challenged like its BYE (RFC 3261 §22), then signed: both responses."""
    challenge = phone.exchange(info(phone, ok, port, content_type, body))
    if challenge.status != 401:
        return challenge, challenge
    bob = f"sip:bob@127.0.0.1:{port}"
    auth = authorization(challenge_for(challenge, "SHA-256"), user, password, "INFO", bob)
    request = info(phone, ok, port, content_type, body)
    signed = request.replace(b"Max-Forwards: 70\r\n", f"{auth}\r\nMax-Forwards: 70\r\n".encode())
    return challenge, phone.exchange(signed)


async def test_a_phone_presses_keys_by_info(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path))
    edge: SipEdge | None = None
    try:
        AccountService(store, REALM).create_user("alice", None, (), None)
        credentials = CredentialStore(store, REALM)
        device, password = credentials.add("alice", "desk", "test")
        edge = SipEdge(credentials, AuditLog(store))
        handler = Answering()
        edge.take_calls(handler)
        await edge.start(udp=[("127.0.0.1", 0)])
        port = edge.bound[0][1][1]
        user = device.username

        def phone_side() -> list[SipResponse]:
            phone = SipClient(("127.0.0.1", port))
            other = SipClient(("127.0.0.1", port), bind="127.0.0.3", call_id=phone.call_id,
                              tag=phone.tag)  # fmt: skip
            try:
                aor, bob = "sip:alice@callgate", f"sip:bob@127.0.0.1:{port}"
                allowed = phone.exchange(phone.request("OPTIONS", aor))
                stray = phone.exchange(info(phone, allowed, port, "application/dtmf", b"5"))
                first = phone.exchange(phone.request("INVITE", aor, to=bob))
                phone.send(phone.request("ACK", aor, to=bob, cseq=phone.cseq))
                auth = authorization(challenge_for(first, "SHA-256"), user, password, "INVITE", bob)
                ok = phone.exchange(phone.request("INVITE", aor, [auth], to=bob))
                while ok.status < 200:
                    ok = phone.receive()
                phone.send(in_dialog(phone, "ACK", ok, port))
                relay = b"Signal=5\r\nDuration=160\r\n"
                dtmf = "application/dtmf-relay"
                challenge, taken = signed_info(phone, ok, port, dtmf, relay, user, password)
                _, unsigned = signed_info(phone, ok, port, dtmf, relay, user, "wrong")
                replies = [
                    allowed,
                    stray,
                    ok,
                    challenge,
                    taken,
                    unsigned,
                    signed_info(phone, ok, port, "text/plain", b"5", user, password)[1],
                    signed_info(phone, ok, port, dtmf, b"Signal=E", user, password)[1],
                ]
                other.cseq = phone.cseq + 10
                forged = info(other, ok, port, "application/dtmf-relay", b"Signal=9\r\n")
                replies.append(other.exchange(forged))
                replies.append(signed_bye(phone, ok, port, user, password))
                return replies
            finally:
                phone.close()
                other.close()

        replies = await asyncio.to_thread(phone_side)
        allowed, stray, ok, challenge, taken, unsigned, other_type, bad, forged, bye = replies
        assert "INFO" in (allowed.headers.get("allow") or "").split(", ")
        assert stray.status == 481 and ok.status == 200
        assert challenge.status == 401 and taken.status == 200  # challenged like BYE
        assert unsigned.status == 401  # a wrong password presses no key
        assert (other_type.status, other_type.headers.get("accept")) == (
            415, "application/dtmf-relay, application/dtmf"
        )  # fmt: skip
        assert (bad.status, bad.reason) == (400, "Bad Request (not a DTMF key)")
        assert (forged.status, forged.reason) == (403, "Forbidden (not a party to this dialog)")
        assert bye.status == 200
        assert handler.keys == [("5", 160)]  # only the phone's own, well-formed key
    finally:
        if edge is not None:
            await edge.close()
        store.close()
