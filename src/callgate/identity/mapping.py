"""Directory groups → callgate groups and role, by configuration (pure; docs/identity.md).

Group names compare without regard to case (Active Directory's do). The role is the highest one
any mapped group grants (admin > compliance > security > user), else the default. Directory
groups that the configuration does not name are ignored and listed as "unmapped" in the audited
decision.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ROLE_RANK = {"user": 0, "security": 1, "compliance": 2, "admin": 3}
HANDLE_RE = re.compile(r"[a-z0-9._-]{1,64}")  # the account handle (accounts.service)


@dataclass(frozen=True, slots=True)
class GroupRules:
    """The mapping part of `[identity.ldap]` (or of an OIDC provider's claims)."""

    group_map: Mapping[str, Iterable[str]] = field(default_factory=dict)
    role_map: Mapping[str, str] = field(default_factory=dict)
    default_role: str = "user"
    allowed_groups: Iterable[str] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """What a user's directory groups gave them, and why (written to the audit log)."""

    groups: tuple[str, ...]
    role: str
    allowed: bool
    mapped: dict[str, list[str]]  # directory group -> callgate groups it gave
    roles: dict[str, str]  # directory group -> role it grants
    unmapped: list[str]  # directory groups the configuration does not name

    def as_json(self) -> dict[str, Any]:
        return {
            "groups": list(self.groups),
            "role": self.role,
            "allowed": self.allowed,
            "mapped": self.mapped,
            "roles": self.roles,
            "unmapped": self.unmapped,
        }


def decide(rules: GroupRules, directory_groups: Iterable[str]) -> Decision:
    group_map = {name.lower(): list(targets) for name, targets in rules.group_map.items()}
    role_map = {name.lower(): role for name, role in rules.role_map.items()}
    allowed_groups = {name.lower() for name in rules.allowed_groups}
    groups: set[str] = set()
    mapped: dict[str, list[str]] = {}
    roles: dict[str, str] = {}
    unmapped: list[str] = []
    role = rules.default_role
    in_allowed = not allowed_groups
    for name in sorted(set(directory_groups), key=str.lower):
        key = name.lower()
        known = False
        if key in group_map:
            mapped[name] = group_map[key]
            groups.update(group_map[key])
            known = True
        if key in role_map:
            roles[name] = role_map[key]
            if ROLE_RANK[role_map[key]] > ROLE_RANK[role]:
                role = role_map[key]
            known = True
        if key in allowed_groups:
            in_allowed = True
            known = True
        if not known:
            unmapped.append(name)
    return Decision(
        groups=tuple(sorted(groups)),
        role=role,
        allowed=in_allowed,
        mapped=mapped,
        roles=roles,
        unmapped=unmapped,
    )


def handle_from(value: str) -> str | None:
    """The callgate handle for a directory name: lower-cased, a UPN or e-mail cut at "@";
    None when it is not a valid handle (1-64 of a-z 0-9 . _ -)."""
    handle = value.strip().lower().partition("@")[0]
    return handle if HANDLE_RE.fullmatch(handle) else None
