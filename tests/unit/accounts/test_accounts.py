"""Accounts: argon2id passwords, sign-in, bearer tokens (expiry on a ManualClock), first admin."""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData, select, text

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.clock import ManualClock
from callgate.errors import InvalidAccountValue, UnknownUserError, UserExistsError
from callgate.storage.db import Store
from callgate.storage.repositories import TurnUserRepository
from callgate.turn.auth import long_term_key

# argon2's minimum cost: fast tests, same code path.
CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def stored_text(store: Store) -> str:
    """Every value of every table, as text: what someone reading the database would see."""
    tables = MetaData()
    tables.reflect(store.engine)
    with store.engine.connect() as conn:
        return "\n".join(
            repr(tuple(row))
            for table in tables.sorted_tables
            for row in conn.execute(select(table))
        )


@pytest.fixture
def accounts(store: Store, clock: ManualClock) -> AccountService:
    return AccountService(store, "callgate", clock, Passwords(CHEAP))


def test_argon2id_hash_verifies_only_the_right_password() -> None:
    passwords = Passwords(CHEAP)
    hashed = passwords.hash("correct horse")
    assert hashed.startswith("$argon2id$") and "correct horse" not in hashed
    assert passwords.verify(hashed, "correct horse")
    assert not passwords.verify(hashed, "correct horsE")
    assert not passwords.verify(None, "correct horse")
    assert not passwords.verify("not-a-hash", "x")
    assert passwords.hash("same") != passwords.hash("same")  # salted


def test_create_and_authenticate(accounts: AccountService, store: Store) -> None:
    user = accounts.create_user("alice", "Alice A", ["eng", "eng", "ops"], "pw-alice-1")
    assert (user.handle, user.display_name, user.groups, user.is_admin) == (
        "alice",
        "Alice A",
        ("eng", "ops"),
        False,
    )
    assert accounts.authenticate("alice", "pw-alice-1") == user
    assert accounts.authenticate("alice", "wrong") is None
    assert accounts.authenticate("nobody", "pw-alice-1") is None
    assert accounts.authenticate("ALICE!", "pw-alice-1") is None
    with pytest.raises(UserExistsError):
        accounts.create_user("alice", None, (), "x")
    assert "$argon2id$" in stored_text(store)
    assert "pw-alice-1" not in stored_text(store)


@pytest.mark.parametrize(
    ("handle", "groups", "password"),
    [
        ("Alice", (), "pw"),
        ("", (), "pw"),
        ("a" * 65, (), "pw"),
        ("al ice", (), "pw"),
        ("alice", ("bad group",), "pw"),
        ("alice", (), ""),
    ],
)
def test_invalid_account_values(
    accounts: AccountService, handle: str, groups: tuple[str, ...], password: str
) -> None:
    with pytest.raises(InvalidAccountValue):
        accounts.create_user(handle, None, groups, password)
    assert accounts.list_users() == []


def test_disabled_user_cannot_sign_in_or_use_tokens_or_turn(accounts: AccountService) -> None:
    user = accounts.create_user("bob", None, (), "pw-bob")
    token, _ = accounts.issue_token(user)
    accounts.disable("bob")
    assert accounts.authenticate("bob", "pw-bob") is None
    assert accounts.verify_token(token) is None
    accounts.enable("bob")
    assert accounts.authenticate("bob", "pw-bob") is not None
    # Tokens issued before the disable stay revoked: enabling needs a fresh sign-in.
    assert accounts.verify_token(token) is None
    fresh, _ = accounts.issue_token(user)
    assert accounts.verify_token(fresh) is not None
    with pytest.raises(UnknownUserError):
        accounts.disable("nobody")


def test_set_password_changes_hash(accounts: AccountService) -> None:
    accounts.create_user("carol", None, (), "old-pw")
    accounts.set_password("carol", "new-pw")
    assert accounts.authenticate("carol", "old-pw") is None
    assert accounts.authenticate("carol", "new-pw") is not None
    with pytest.raises(UnknownUserError):
        accounts.set_password("nobody", "x")


def test_account_without_password_cannot_sign_in(accounts: AccountService) -> None:
    accounts.create_user("dave")
    assert accounts.authenticate("dave", "") is None


def test_token_expiry_on_the_clock(accounts: AccountService, clock: ManualClock) -> None:
    user = accounts.create_user("erin", None, (), "pw")
    token, expires_at = accounts.issue_token(user, ttl_s=60, device="laptop")
    assert expires_at.timestamp() == clock.wall() + 60
    assert accounts.verify_token(token) == user
    clock.advance(59.9)
    assert accounts.verify_token(token) == user
    clock.advance(0.1)
    assert accounts.verify_token(token) is None
    assert accounts.verify_token("") is None
    assert accounts.verify_token("x" * 10_000) is None
    with pytest.raises(InvalidAccountValue):
        accounts.issue_token(user, ttl_s=0)


def test_revocation_and_removal(accounts: AccountService, store: Store) -> None:
    user = accounts.create_user("fay", None, (), "pw")
    first, _ = accounts.issue_token(user)
    second, _ = accounts.issue_token(user)
    assert accounts.revoke_token(first) is True
    assert accounts.revoke_token(first) is False
    assert accounts.verify_token(first) is None
    assert accounts.verify_token(second) == user
    with store.engine.connect() as conn:
        stored = list(conn.scalars(text("SELECT token_hash FROM api_tokens")))
    assert len(stored) == 2 and first not in stored and second not in stored
    accounts.remove("fay")
    assert accounts.verify_token(second) is None
    with pytest.raises(UnknownUserError):
        accounts.remove("fay")


def test_first_admin_is_created_once(accounts: AccountService) -> None:
    password = accounts.ensure_first_admin()
    assert password is not None and len(password) >= 20
    admin = accounts.authenticate("admin", password)
    assert admin is not None and admin.is_admin
    assert accounts.ensure_first_admin() is None


def test_first_admin_not_created_when_users_exist(accounts: AccountService) -> None:
    accounts.create_user("gus", None, (), "pw")
    assert accounts.ensure_first_admin() is None
    assert accounts.get("admin") is None


def test_key_lookup_knows_static_turn_users_never_account_passwords(
    store: Store, accounts: AccountService
) -> None:
    from callgate import runtime

    static = TurnUserRepository(store.sessions)
    static.add("svc", "callgate", long_term_key("svc", "callgate", "svc-pw"))
    accounts.create_user("hana", None, (), "hana-pw")
    lookup = runtime.KeyLookup(static, "callgate", ttl=0.0)
    assert lookup("hana") is None  # a sign-in password never opens the relay
    assert lookup("svc") == long_term_key("svc", "callgate", "svc-pw")
    assert lookup("nobody") is None


def test_nothing_derived_from_the_password_but_its_argon2_hash_is_stored(
    store: Store, accounts: AccountService
) -> None:
    from sqlalchemy import text

    accounts.create_user("ivy", None, (), "ivy-pw")
    accounts.set_password("ivy", "ivy-pw-2")
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM users WHERE handle = 'ivy'")).mappings().one()
    assert "turn_key_hex" not in row
    for password in ("ivy-pw", "ivy-pw-2"):
        md5 = long_term_key("ivy", "callgate", password).hex()
        assert all(md5 not in str(value) for value in row.values())


def test_valid_tokens_agrees_with_verify_token(
    accounts: AccountService, clock: ManualClock
) -> None:
    """The open sockets' periodic check (many tokens, few queries) keeps exactly the tokens
    verify_token accepts: not the revoked, expired, disabled account's or unknown ones."""
    users = [accounts.create_user(f"u{i}") for i in range(4)]
    kept = [accounts.issue_token(users[0], ttl_s=600)[0] for _ in range(3)]
    revoked = accounts.issue_token(users[1], ttl_s=600)[0]
    accounts.revoke_token(revoked)
    expiring = accounts.issue_token(users[2], ttl_s=60)[0]
    disabled = accounts.issue_token(users[3], ttl_s=600)[0]
    accounts.disable("u3")
    clock.advance(60)
    asked = [*kept, revoked, expiring, disabled, "never-issued", "", "x" * 1000]
    assert accounts.valid_tokens(asked) == set(kept)
    assert {t for t in asked if accounts.verify_token(t) is not None} == set(kept)
    assert accounts.valid_tokens([]) == set()
