"""Directory sign-in: LDAP / Active Directory accounts next to local ones (docs/identity.md).

Sits beside `accounts` (it creates and updates accounts through its own small repository) and
below the API, which calls `PasswordSignIn` from POST /api/login.
"""
