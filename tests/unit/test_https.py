"""HTTPS pieces without sockets: the local CA of --self-signed, the HTTP → HTTPS redirect target,
HSTS, and the settings that go with them. (Over real sockets: tests/browser/test_https.py.)"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from callgate.config import load_settings
from callgate.errors import ConfigError
from callgate.tls_local import ensure_local_tls
from callgate.web.https import Hsts, https_redirect, redirect_target


def sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


def test_local_ca_signs_a_server_certificate_for_the_names_given(tmp_path: Path) -> None:
    tls = ensure_local_tls(tmp_path, ["203.0.113.1", "pbx.example", "localhost"])
    assert tls.created_ca and tls.issued
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    for key in (tmp_path / "tls" / "ca-key.pem", tls.key):
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert sans(tls.cert) == {"203.0.113.1", "pbx.example", "localhost"}
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    assert cert.issuer == ca.subject
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca)  # raises when the signature does not verify
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_the_ca_stays_and_the_certificate_is_reissued_only_for_a_new_name(tmp_path: Path) -> None:
    first = ensure_local_tls(tmp_path, ["203.0.113.1"])
    ca_pem, cert_pem = first.ca_cert.read_bytes(), first.cert.read_bytes()
    again = ensure_local_tls(tmp_path, ["203.0.113.1"])
    assert (again.created_ca, again.issued) == (False, False)
    assert again.cert.read_bytes() == cert_pem
    wider = ensure_local_tls(tmp_path, ["203.0.113.1", "::1"])
    assert (wider.created_ca, wider.issued) == (False, True)
    assert wider.ca_cert.read_bytes() == ca_pem  # the trust given to the CA survives
    assert ipaddress.ip_address("::1").compressed in sans(wider.cert)


def scope(host: bytes | None, path: str = "/api/me", query: bytes = b"") -> dict[str, Any]:
    headers = [(b"host", host)] if host is not None else []
    return {"type": "http", "path": path, "query_string": query, "headers": headers}


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (b"pbx.example:8080", 8443, "https://pbx.example:8443/api/me?a=1"),
        (b"pbx.example", 443, "https://pbx.example/api/me?a=1"),
        (b"[2001:db8::1]:8080", 8443, "https://[2001:db8::1]:8443/api/me?a=1"),
        (None, 8443, "https://203.0.113.1:8443/api/me?a=1"),
    ],
)
def test_redirect_keeps_the_host_asked_for_path_and_query(
    host: bytes | None, port: int, expected: str
) -> None:
    assert redirect_target(scope(host, query=b"a=1"), "203.0.113.1", port) == expected


def run_app(app: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(request, receive, send))
    return sent


def test_plain_http_answers_308_and_https_answers_carry_hsts() -> None:
    start = run_app(https_redirect("203.0.113.1", 8443), scope(b"pbx.example:8080"))[0]
    assert start["status"] == 308  # keeps the method: a POST stays a POST
    assert (b"location", b"https://pbx.example:8443/api/me") in start["headers"]

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    start = run_app(Hsts(ok), scope(b"pbx.example:8443"))[0]
    assert (b"strict-transport-security", b"max-age=31536000") in start["headers"]


def test_https_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--https needs --cert and --key, or --self-signed"):
        load_settings(None, {"https": "0.0.0.0:8443"})
    with pytest.raises(ConfigError, match="not with --cert/--key"):
        load_settings(
            None, {"self_signed": True, "turn": {"cert": tmp_path / "c", "key": tmp_path / "k"}}
        )
    trial = load_settings(None, {"self_signed": True, "http": "203.0.113.1:8080"})
    assert trial.https_address() == ("203.0.113.1", 8443)
    assert load_settings(None, {}).https_address() is None
