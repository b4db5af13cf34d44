"""SIP device credentials (table sip_credentials): one per device, owned by a callgate user.

Only the digest HA1 for MD5 and SHA-256 is stored (RFC 8760 §2: H(username:realm:password)),
so a changed realm makes every credential unusable until it is issued again. The password is
generated here, shown once to the administrator, and never stored or logged. Creating and
removing one is audited (`sip.credential.add` / `sip.credential.remove`).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from callgate.records.audit import AuditLog
from callgate.sip.digest import ha1
from callgate.storage.db import Store
from callgate.storage.models import SipCredential, User

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class CredentialError(ValueError):
    """A credential that cannot be created or found (message safe to show)."""


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    handle: str  # the owning callgate user
    device: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    disabled: bool  # the owning user is disabled
    srtp: bool = False  # called with SRTP only (SDES keys, RFC 4568)

    def ha1(self, algorithm: str) -> str | None:
        return {"MD5": self.ha1_md5, "SHA-256": self.ha1_sha256}.get(algorithm)


class CredentialStore:
    def __init__(self, store: Store, realm: str) -> None:
        self._store = store
        self.realm = realm

    def add(
        self, handle: str, device: str, actor: str, srtp: bool = False
    ) -> tuple[Credential, str]:
        """A new credential for `handle`'s `device`; returns it and its password (shown once).
        `srtp`: the edge calls the device with SRTP only (docs/sip.md, "SRTP towards phones")."""
        device = device.strip().lower()
        if not _NAME.match(device):
            raise CredentialError("device: 1-64 of a-z 0-9 . _ -, starting with a letter or digit")
        username = f"{handle}.{device}"
        password = secrets.token_urlsafe(18)
        with self._store.sessions.begin() as session:
            user = session.scalar(select(User).where(User.handle == handle))
            if user is None:
                raise CredentialError(f"no user {handle!r}")
            row = SipCredential(
                username=username,
                user_id=user.id,
                device=device,
                realm=self.realm,
                ha1_md5=ha1("MD5", username, self.realm, password),
                ha1_sha256=ha1("SHA-256", username, self.realm, password),
                srtp=srtp,
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                raise CredentialError(f"{handle} already has a device {device!r}") from None
            details = {"username": username, "device": device, "realm": self.realm, "srtp": srtp}
            AuditLog.append_in(
                session.connection(), actor, "sip.credential.add", f"user:{handle}", details
            )
            credential = _record(row, user)
        return credential, password

    def remove(self, username: str, actor: str) -> None:
        with self._store.sessions.begin() as session:
            row = session.scalar(select(SipCredential).where(SipCredential.username == username))
            if row is None:
                raise CredentialError(f"no SIP credential {username!r}")
            user = session.get(User, row.user_id)
            session.execute(delete(SipCredential).where(SipCredential.id == row.id))
            owner = user.handle if user is not None else "?"
            AuditLog.append_in(
                session.connection(),
                actor,
                "sip.credential.remove",
                f"user:{owner}",
                {"username": username},
            )

    def get(self, username: str) -> Credential | None:
        with self._store.sessions() as session:
            found = session.execute(
                select(SipCredential, User)
                .join(User, User.id == SipCredential.user_id)
                .where(SipCredential.username == username)
            ).first()
        return _record(*found) if found is not None else None

    def list(self, handle: str | None = None) -> list[Credential]:
        query = select(SipCredential, User).join(User, User.id == SipCredential.user_id)
        if handle is not None:
            query = query.where(User.handle == handle)
        with self._store.sessions() as session:
            rows = session.execute(query.order_by(SipCredential.username)).all()
        return [_record(c, u) for c, u in rows]


def _record(row: SipCredential, user: User) -> Credential:
    return Credential(
        username=row.username,
        handle=user.handle,
        device=row.device,
        realm=row.realm,
        ha1_md5=row.ha1_md5,
        ha1_sha256=row.ha1_sha256,
        disabled=user.disabled,
        srtp=bool(row.srtp),
    )
