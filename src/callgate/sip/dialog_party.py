"""Who may speak in a dialog: an in-dialog request (re-INVITE, BYE, CANCEL, ACK) is taken only
from the party that made the dialog (docs/sip.md, "In-dialog requests").

RFC 3261 §12.2.2 matches a request to a dialog by Call-ID and tags, values anyone who saw one
message of the call knows; §26.1.4 warns that a forged BYE tears a call down and a forged
re-INVITE moves its media. So the edge also asks where the request comes from and, for a
re-INVITE or a device's BYE (both digest-challenged, §22), who signed it:

- a call a phone made: its signaling IP (the INVITE's source), and for a re-INVITE or a BYE the
  same device credential;
- a call from a trunk: one of the trunk's addresses (IP-based trunk authentication);
- a call we made to a phone: the IP of the flow it registered on, and for a re-INVITE or a BYE
  its device credential; to a carrier: the trunk's addresses or its `outbound` host.

Anything else gets `403 Forbidden` and leaves the call as it was (edge_dialogs.py).
"""

from __future__ import annotations

from callgate.sip.credentials import Credential
from callgate.sip.invite import InboundCall
from callgate.sip.outbound import OutboundCall
from callgate.sip.trunks import Trunk

SIGNED = frozenset(
    {"INVITE", "BYE", "INFO"}
)  # a device's requests that carry its digest credential


def same_party(
    call: InboundCall | OutboundCall,
    method: str,
    source: str,
    credential: Credential | None,
    trunk: Trunk | None = None,
) -> bool:
    """Whether a `method` request from IP `source`, authenticated as `credential` (None: not
    authenticated, or from a trunk), may act in `call`; `trunk`: the trunk an outbound call
    went through (None: to a phone)."""
    if isinstance(call, InboundCall):
        if call.trunk is not None:
            return source in call.trunk.addresses
        device = call.credential.username if call.credential is not None else None
    else:
        if trunk is not None:
            carrier = {trunk.outbound[0]} if trunk.outbound is not None else set()
            return source in trunk.addresses or source in carrier
        device = call.binding.username
    if source != call.peer.address[0]:
        return False
    return method not in SIGNED or (credential is not None and credential.username == device)
