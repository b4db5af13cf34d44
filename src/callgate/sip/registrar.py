"""The registrar (RFC 3261 §10.3): where each user's SIP devices can be reached.

Bindings live in memory (a restarted server has none until phones refresh, as with any
registrar that keeps no location store); each records the address and transport the REGISTER
came from, so requests reach a phone behind NAT on the flow it opened (RFC 3581, RFC 5626 §5).
The digest check happens before `register` is called (edge_registrations.py); here the authenticated
credential may bind only its own user's address-of-record.

SIP Outbound (RFC 5626): a phone behind NAT keeps its flow open with keep-alives, but sends them
only to a registrar that says it supports Outbound. A REGISTER with `Supported: outbound` whose
contacts carry `+sip.instance` and `reg-id` (§4.2) is answered with `Require: outbound` (§6)
and `Flow-Timer` (§5.4): how often the phone is to send keep-alives (STUN over UDP, CRLF over
TCP; transport.py answers both), shorter than the NAT's UDP timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

from callgate.sip.credentials import Credential
from callgate.sip.message import SipParseError, SipRequest
from callgate.sip.transport import Peer
from callgate.sip.uri import parse_name_addr, parse_sip_uri

DEFAULT_EXPIRES = 3600
MIN_EXPIRES = 60  # shorter gets 423 Interval Too Brief (RFC 3261 §10.3 step 7)
MAX_EXPIRES = 3600
MAX_BINDINGS_PER_DEVICE = 5
FLOW_TIMER = 25  # s between a phone's keep-alives (RFC 5626 §4.4.1: UDP NATs forget in ~30 s)


@dataclass(slots=True)
class Binding:
    handle: str  # the callgate user (address-of-record sip:handle@realm)
    username: str  # the device credential that registered it
    contact: str  # the Contact URI
    peer: Peer  # the flow the REGISTER arrived on
    expires_at: float  # monotonic seconds
    call_id: str
    cseq: int
    updated: float = 0.0  # monotonic seconds of the REGISTER that made or refreshed it


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    added: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()


class Registrar:
    def __init__(self, flow_timer: int = FLOW_TIMER) -> None:
        self._bindings: dict[str, list[Binding]] = {}  # by handle
        self.flow_timer = flow_timer

    def bindings(self, now: float, handle: str | None = None) -> list[Binding]:
        """Unexpired bindings (of `handle`, or all)."""
        self.expire(now)
        if handle is not None:
            return list(self._bindings.get(handle, []))
        return [b for found in self._bindings.values() for b in found]

    def expire(self, now: float) -> list[Binding]:
        gone: list[Binding] = []
        for handle, found in list(self._bindings.items()):
            alive = [b for b in found if b.expires_at > now]
            gone += [b for b in found if b.expires_at <= now]
            if alive:
                self._bindings[handle] = alive
            else:
                del self._bindings[handle]
        return gone

    def register(
        self, request: SipRequest, credential: Credential, peer: Peer, now: float
    ) -> Outcome:
        # validate (RFC 3261 §10.3 steps 1-5)
        to = parse_sip_uri(parse_name_addr(request.headers.get("to") or "").uri)
        if to.user is None:
            raise SipParseError("To has no user part")
        number, _method = request.cseq
        call_id = request.headers.get("call-id") or ""
        default = _expires_header(request)
        contacts = request.headers.all("contact")
        # authorize (step 6): a device binds only its own user's address-of-record
        if to.user.lower() not in (credential.handle, credential.username):
            return Outcome(403, "Forbidden (not your address-of-record)")
        current = self.bindings(now, credential.handle)
        if not contacts:  # a query: list the bindings
            return Outcome(200, "OK", _contact_headers(current, now))
        if contacts == ["*"]:
            if default != 0 or len(contacts) != 1:
                raise SipParseError("Contact * needs Expires: 0")
            mine = [b for b in current if b.username == credential.username]
            return self._replace(credential, current, [], mine, now)
        # act (step 7)
        added: list[Binding] = []
        removed: list[Binding] = []
        kept = [b for b in current if b.username != credential.username]
        own = {b.contact: b for b in current if b.username == credential.username}
        for value in contacts:
            if value.strip() == "*":
                raise SipParseError("Contact * with other contacts")
            contact = parse_name_addr(value)
            expires = _expires(contact.params.get("expires"), default)
            if 0 < expires < MIN_EXPIRES:
                return Outcome(423, "Interval Too Brief", (("Min-Expires", str(MIN_EXPIRES)),))
            old = own.pop(contact.uri, None)
            if old is not None and old.call_id == call_id and number <= old.cseq:
                return Outcome(500, "Server Internal Error (out of order REGISTER)")
            if expires == 0:
                if old is not None:
                    removed.append(old)
                continue
            binding = Binding(
                credential.handle,
                credential.username,
                contact.uri,
                peer,
                now + min(expires, MAX_EXPIRES),
                call_id,
                number,
                now,
            )
            if old is None:
                added.append(binding)
            kept.append(binding)
        kept += own.values()
        if sum(b.username == credential.username for b in kept) > MAX_BINDINGS_PER_DEVICE:
            return Outcome(403, "Forbidden (too many contacts for this device)")
        outcome = self._replace(credential, kept, added, removed, now)
        if _wants_outbound(request, contacts):
            outbound = (("Require", "outbound"), ("Flow-Timer", str(self.flow_timer)))
            outcome = Outcome(200, "OK", outbound + outcome.headers, outcome.added, outcome.removed)
        return outcome

    def _replace(
        self,
        credential: Credential,
        kept: list[Binding],
        added: list[Binding],
        removed: list[Binding],
        now: float,
    ) -> Outcome:
        gone = {id(b) for b in removed}
        alive = [b for b in kept if id(b) not in gone]
        if alive:
            self._bindings[credential.handle] = alive
        else:
            self._bindings.pop(credential.handle, None)
        return Outcome(200, "OK", _contact_headers(alive, now), tuple(added), tuple(removed))

    def drop_flow(self, peer: Peer) -> list[Binding]:
        """Forget the bindings made over a connection that closed: nothing reaches the phone
        through it any more (RFC 5626 §5: a binding is only as good as its flow)."""
        dropped: list[Binding] = []
        for handle, found in list(self._bindings.items()):
            dropped += [b for b in found if b.peer is peer]
            alive = [b for b in found if b.peer is not peer]
            if alive:
                self._bindings[handle] = alive
            else:
                del self._bindings[handle]
        return dropped


def _wants_outbound(request: SipRequest, contacts: list[str]) -> bool:
    """The phone registers with SIP Outbound (RFC 5626 §4.2): it supports the option and every
    contact names its instance and registration id."""
    supported = ",".join(request.headers.all("supported")).lower()
    if "outbound" not in {tag.strip() for tag in supported.split(",")}:
        return False
    params = [parse_name_addr(value).params for value in contacts]
    return all("+sip.instance" in p and "reg-id" in p for p in params)


def _expires_header(request: SipRequest) -> int:
    raw = request.headers.get("expires")
    if raw is None:
        return DEFAULT_EXPIRES
    if not raw.isdigit() or len(raw) > 10:
        raise SipParseError("Bad Expires")
    return int(raw)


def _expires(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 10:
        raise SipParseError("Bad Contact expires")
    return int(raw)


def _contact_headers(bindings: list[Binding], now: float) -> tuple[tuple[str, str], ...]:
    return tuple(
        ("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}") for b in bindings
    )
