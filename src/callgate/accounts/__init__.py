"""Accounts: users with argon2id passwords, sign-in and bearer tokens."""

from __future__ import annotations

from callgate.accounts.passwords import PasswordPolicy, Passwords
from callgate.accounts.records import TokenRecord, UserRecord
from callgate.accounts.service import AccountService

__all__ = ["AccountService", "PasswordPolicy", "Passwords", "TokenRecord", "UserRecord"]
