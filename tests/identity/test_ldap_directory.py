"""LdapDirectory against a real OpenLDAP slapd over LDAPS and StartTLS (tests/identity/slapd.py)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from callgate.identity.directory import LdapDirectory
from callgate.identity.errors import DirectoryUnavailable
from tests.identity.conftest import ldap_settings
from tests.identity.slapd import PASSWORDS, Slapd, user_dn


def test_alice_signs_in_with_nested_groups_and_profile(slapd: Slapd) -> None:
    entry = LdapDirectory(ldap_settings(slapd)).authenticate("alice", PASSWORDS["alice"])
    assert entry is not None
    assert entry.dn == user_dn("alice")
    assert entry.display_name == "Alice Martin"
    assert entry.email == "alice@example.com"
    # it-staff directly; voice-admins and everyone through it-staff.
    assert entry.groups == ("everyone", "it-staff", "voice-admins")
    assert not entry.disabled
    assert len(entry.external_id) == 36  # entryUUID


def test_without_nesting_only_direct_groups(slapd: Slapd) -> None:
    directory = LdapDirectory(ldap_settings(slapd, nested_groups=False))
    entry = directory.authenticate("alice", PASSWORDS["alice"])
    assert entry is not None and entry.groups == ("it-staff",)


def test_group_loop_ends(slapd: Slapd) -> None:
    entry = LdapDirectory(ldap_settings(slapd)).authenticate("bob", PASSWORDS["bob"])
    assert entry is not None
    assert entry.groups == ("everyone", "loop-a", "loop-b", "sales")


def test_wrong_empty_and_unknown_are_refused(slapd: Slapd) -> None:
    directory = LdapDirectory(ldap_settings(slapd))
    assert directory.authenticate("alice", "not-her-password") is None
    # An empty password would be an unauthenticated bind (RFC 4513 §5.1.2): never sent.
    assert directory.authenticate("alice", "") is None
    assert directory.authenticate("nobody", PASSWORDS["alice"]) is None


@pytest.mark.parametrize(
    "login",
    ["*", "al*", "alice)(uid=*", "*)(uid=*))(|(uid=*", "alice\\", "alice\x00", "(uid=alice)"],
)
def test_filter_injection_finds_nobody(slapd: Slapd, login: str) -> None:
    """Each typed value is escaped (RFC 4515 §3): wildcards and parentheses match literally."""
    directory = LdapDirectory(ldap_settings(slapd))
    assert directory.authenticate(login, PASSWORDS["alice"]) is None
    with directory.service() as session:
        assert session.find(login) is None


def test_disabled_account_is_flagged(slapd: Slapd) -> None:
    entry = LdapDirectory(ldap_settings(slapd)).authenticate("dave", PASSWORDS["dave"])
    assert entry is not None and entry.disabled


def test_login_by_mail(slapd: Slapd) -> None:
    directory = LdapDirectory(ldap_settings(slapd, login_attribute="mail"))
    entry = directory.authenticate("bob@example.com", PASSWORDS["bob"])
    assert entry is not None and entry.handle_value == "bob"


def test_lookup_by_stable_id(slapd: Slapd) -> None:
    directory = LdapDirectory(ldap_settings(slapd))
    entry = directory.authenticate("erin", PASSWORDS["erin"])
    assert entry is not None
    with directory.service() as session:
        again = session.by_id(entry.external_id)
        assert again is not None and again.dn == user_dn("erin")
        assert session.by_id("00000000-0000-0000-0000-000000000000") is None


def test_starttls(slapd: Slapd) -> None:
    directory = LdapDirectory(ldap_settings(slapd, url=slapd.ldap_url, start_tls=True))
    entry = directory.authenticate("alice", PASSWORDS["alice"])
    assert entry is not None and entry.display_name == "Alice Martin"


def test_untrusted_certificate_is_refused(slapd: Slapd, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    directory = LdapDirectory(ldap_settings(slapd, ca_file=other))
    with pytest.raises(DirectoryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        directory.authenticate("alice", PASSWORDS["alice"])


def test_certificate_for_another_host_is_refused(slapd: Slapd) -> None:
    """A TLS server with a certificate from the trusted CA, but for another name: refused."""
    cert = slapd.ca.issue_cert("ldap.example.net")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    try:
        directory = LdapDirectory(ldap_settings(slapd, url=f"ldaps://127.0.0.1:{port}"))
        with pytest.raises(DirectoryUnavailable, match=r"(?i)doesn.t match any name"):
            directory.authenticate("alice", PASSWORDS["alice"])
    finally:
        listener.close()
        thread.join(10)


def test_wrong_service_password_is_a_directory_error(slapd: Slapd) -> None:
    directory = LdapDirectory(ldap_settings(slapd, bind_password="wrong"))
    with pytest.raises(DirectoryUnavailable, match="service account") as caught:
        directory.authenticate("alice", PASSWORDS["alice"])
    assert "wrong" not in str(caught.value)


def test_directory_down_is_a_clear_error(slapd: Slapd) -> None:
    url = "ldaps://127.0.0.1:1"  # nothing listens on port 1
    directory = LdapDirectory(ldap_settings(slapd, url=url))
    with pytest.raises(DirectoryUnavailable, match=r"127\.0\.0\.1"):
        directory.authenticate("alice", PASSWORDS["alice"])


def test_directory_that_never_answers_times_out(slapd: Slapd) -> None:
    """A listener that accepts and stays silent: a clear error after `timeout_s`, no hang."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        directory = LdapDirectory(
            ldap_settings(slapd, url=f"ldaps://127.0.0.1:{port}", timeout_s=1)
        )
        with pytest.raises(DirectoryUnavailable, match=f"127.0.0.1:{port}"):
            directory.authenticate("alice", PASSWORDS["alice"])
    finally:
        listener.close()
