"""Session timers (RFC 4028) as the answerer of INVITEs and re-INVITEs: the party refreshes, we
watch (docs/sip.md, "Session timers").

A party that supports the extension (`timer` in its Supported or Require) and asks for an
interval (`Session-Expires`) gets it in our 2xx with `refresher=uac` and `Require: timer` (§9):
it refreshes the session with a re-INVITE before the interval ends, and if no refresh comes we
end the call with BYE `min(32, interval/3)` seconds before it would expire (§10). We never send
refreshes ourselves, so a request that names us the refresher (`refresher=uas`), or that comes
from a party without the extension (a proxy added the header: §9 would make us the refresher),
is answered without `Session-Expires`: no session timer for that dialog (§7.4: a 2xx without it
means no expiration). An interval below our `Min-SE` (90 s, the smallest §4 allows) or below
the request's own `Min-SE` is refused `422 Session Interval Too Small` naming ours (§9); a
malformed one (not ASCII digits, §4's delta-seconds) or a `Min-SE` above the longest interval
we take (a day) `400`.
"""

from __future__ import annotations

from dataclasses import dataclass

from callgate.sip.message import SipRequest

MIN_SE = 90  # s: the smallest interval we take (RFC 4028 §4: never below 90)
MAX_SE = 86400  # s: longer intervals are shortened to this (a day)


class TimerError(ValueError):
    """A Session-Expires we refuse: `status` 422 (too small) or 400 (malformed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = [("Min-SE", str(MIN_SE))] if status == 422 else []


@dataclass(frozen=True, slots=True)
class SessionTimer:
    interval: int  # s: the session expires this long after the last refresh

    @property
    def headers(self) -> list[tuple[str, str]]:
        """What our 2xx carries (§9): the interval, the party refreshing, `Require: timer`."""
        return [("Session-Expires", f"{self.interval};refresher=uac"), ("Require", "timer")]

    @property
    def watch(self) -> float:
        """How long after a refresh we wait for the next before BYE (§10)."""
        return self.interval - min(32.0, self.interval / 3)


def session_timer(request: SipRequest) -> SessionTimer | None:
    """The session timer an INVITE or re-INVITE asks for, None when none is used (module doc);
    TimerError when the request must be refused."""
    value = request.headers.get("session-expires")
    if value is None:
        return None
    delta, *params = (part.strip() for part in value.split(";"))
    minimum = _seconds(request.headers.get("min-se") or str(MIN_SE), "Min-SE")
    interval = _seconds(delta, "Session-Expires")
    if minimum > MAX_SE:  # we would watch longer than we ever do
        raise TimerError(400, f"Bad Request (Min-SE above {MAX_SE})")
    if interval < max(MIN_SE, minimum):
        raise TimerError(422, "Session Interval Too Small")
    named = (p.partition("=")[2].lower() for p in params if p.lower().startswith("refresher="))
    refresher = next(named, "")
    supports = _tags(request, "supported") | _tags(request, "require")
    if "timer" not in supports or refresher == "uas":
        return None  # we would be the refresher: no timer
    return SessionTimer(min(interval, MAX_SE))


def _seconds(value: str, name: str) -> int:
    text = value.split(";")[0].strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:  # `²` is isdigit()
        raise TimerError(400, f"Bad Request (bad {name})")
    return int(text)


def _tags(request: SipRequest, header: str) -> set[str]:
    return {t.strip().lower() for v in request.headers.all(header) for t in v.split(",")}
