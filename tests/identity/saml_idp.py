"""A SAML 2.0 identity provider that is not our code: pysaml2's IdP role (saml2.server.Server),
signing with its own key through Debian's xmlsec1, run in the test process. The test plays the
browser: it takes the AuthnRequest from callgate's redirect, lets the IdP answer it, and posts
the Response to callgate's ACS as the IdP's auto-submitting form would.

`forged` is another IdP with the same entity id but a key callgate does not know; `expired`
issues assertions whose NotOnOrAfter has passed."""

from __future__ import annotations

import base64
import datetime
import os
import shutil
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from saml2 import BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig
    from saml2.metadata import create_metadata_string
    from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
    from saml2.server import Server

XMLSEC = "/usr/bin/xmlsec1"
ENTITY_ID = "http://127.0.0.1:9/idp"  # never contacted: the test carries the messages
SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
PASSWORD_AUTHN = {"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"}


def need_xmlsec() -> None:
    if os.access(XMLSEC, os.X_OK):
        return
    reason = f"{XMLSEC} missing: apt-get install xmlsec1 (scripts/test does)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must run the SAML tests)")
    pytest.skip(reason)


def _keypair(folder: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _config(key: Path, cert: Path, lifetime_minutes: int, sp_metadata: Path | None) -> IdPConfig:
    policy = {
        "default": {"lifetime": {"minutes": lifetime_minutes}, "attribute_restrictions": None}
    }
    settings: dict[str, Any] = {
        "entityid": ENTITY_ID,
        "key_file": str(key),
        "cert_file": str(cert),
        "xmlsec_binary": XMLSEC,
        "signing_algorithm": SHA256,
        "digest_algorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
        "service": {
            "idp": {
                "endpoints": {
                    "single_sign_on_service": [(f"{ENTITY_ID}/sso", BINDING_HTTP_REDIRECT)]
                },
                "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                "policy": policy,
            }
        },
    }
    if sp_metadata is not None:
        settings["metadata"] = {"local": [str(sp_metadata)]}
    config = IdPConfig()
    config.load(settings)
    return config


class SamlIdp:
    def __init__(self, folder: Path) -> None:
        need_xmlsec()
        assert shutil.which("xmlsec1")
        self.folder = folder
        self.key, self.cert = _keypair(folder, "idp")
        self.metadata = folder / "idp-metadata.xml"
        document = create_metadata_string(None, _config(self.key, self.cert, 5, None))
        self.metadata.write_bytes(document if isinstance(document, bytes) else document.encode())
        self._servers: dict[str, Server] = {}

    def trust_sp(self, sp_metadata: bytes) -> None:
        """Load callgate's SP metadata (as fetched from /api/saml/metadata)."""
        path = self.folder / "sp-metadata.xml"
        path.write_bytes(sp_metadata)
        forged_key, forged_cert = _keypair(self.folder, "forged")
        self._servers = {
            "good": Server(config=_config(self.key, self.cert, 5, path)),
            "expired": Server(config=_config(self.key, self.cert, -10, path)),
            "forged": Server(config=_config(forged_key, forged_cert, 5, path)),
        }

    def answer(
        self,
        redirect: str,
        identity: dict[str, list[str]],
        name_id: str,
        signer: str = "good",
        **changes: Any,
    ) -> str:
        """The base64 SAMLResponse answering the AuthnRequest in `redirect` (callgate's 302
        Location), for the person `name_id` with attributes `identity`."""
        server = self._servers[signer]
        request = parse_qs(urlsplit(redirect).query)["SAMLRequest"][0]
        parsed = server.parse_authn_request(request, BINDING_HTTP_REDIRECT)
        message = parsed.message
        arguments: dict[str, Any] = {
            "identity": identity,
            "in_response_to": message.id,
            "destination": message.assertion_consumer_service_url,
            "sp_entity_id": message.issuer.text,
            "name_id": NameID(format=NAMEID_FORMAT_PERSISTENT, text=name_id),
            "sign_assertion": True,
            "sign_response": False,
            "authn": PASSWORD_AUTHN,
            **changes,
        }
        response = server.create_authn_response(**arguments)
        return base64.b64encode(str(response).encode()).decode()
