"""SAML with callgate's own SP key pair: AuthnRequests signed (HTTP-Redirect binding, Bindings
§3.4.4.1) and assertions encrypted to us, end to end over HTTP against the test IdP
(tests/identity/saml_test_idp.py: pysaml2's IdP role) started with --want-signed-requests and
--encrypt-assertions; an assertion in the clear is refused when require_encrypted_assertions
is on; a group-readable key or a half-configured key pair stops the start."""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from callgate.identity.saml_signin import sp_config
from callgate.identity.settings import SamlSettings
from tests.e2e.helpers import Serve, free_port, private_relay_range
from tests.identity.saml_idp import _keypair, need_xmlsec
from tests.identity.saml_test_idp import SamlTestIdp

RUNNER = Path(__file__).with_name("saml_test_idp.py")
PEOPLE = {
    "carol": {"password": "carol-secret", "name_id": "p-carol",
              "attributes": {"uid": ["carol"], "displayName": ["Carol Jones"]}},
}  # fmt: skip


def form_fields(page: str) -> tuple[str, dict[str, str]]:
    """(action, hidden fields) of an HTML form."""
    action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    fields = re.findall(r'name="([^"]+)" value="([^"]*)"', page)
    return action, {html.unescape(k): html.unescape(v) for k, v in fields}


class Setup:
    def __init__(self, folder: Path, idp_port: int, serve: Serve) -> None:
        self.folder, self.idp_port, self.serve = folder, idp_port, serve

    def idp_args(self, **changes: object) -> argparse.Namespace:
        args = {
            "host": "127.0.0.1", "port": self.idp_port, "key": str(self.folder / "idp.key"),
            "cert": str(self.folder / "idp.crt"), "people": str(self.folder / "people.json"),
            "sp_metadata": str(self.folder / "sp-metadata.xml"), "xmlsec": "/usr/bin/xmlsec1",
            "want_signed_requests": True, "encrypt_assertions": True, **changes,
        }  # fmt: skip
        return argparse.Namespace(**args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need_xmlsec()
    folder = tmp_path_factory.mktemp("saml-keys")
    _keypair(folder, "idp")
    sp_key, sp_cert = _keypair(folder, "sp")
    sp_key.chmod(0o600)
    (folder / "people.json").write_text(json.dumps(PEOPLE))
    idp_port, port = free_port(), free_port()
    log = folder / "idp.log"
    command = [
        sys.executable, str(RUNNER), "--port", str(idp_port),
        "--key", str(folder / "idp.key"), "--cert", str(folder / "idp.crt"),
        "--people", str(folder / "people.json"), "--sp-metadata", str(folder / "sp-metadata.xml"),
        "--want-signed-requests", "--encrypt-assertions",
    ]  # fmt: skip
    with log.open("ab") as out:
        idp = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "ready" not in log.read_text():
            assert idp.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        metadata = httpx.get(f"http://127.0.0.1:{idp_port}/metadata", timeout=30)
        (folder / "idp-metadata.xml").write_bytes(metadata.content)
        env = {
            "ENABLED": "true", "IDP_METADATA_FILE": str(folder / "idp-metadata.xml"),
            "SP_ENTITY_ID": f"http://127.0.0.1:{port}/api/saml/metadata",
            "ACS_URL": f"http://127.0.0.1:{port}/api/saml/acs", "HANDLE_ATTRIBUTE": "uid",
            "SP_KEY_FILE": str(sp_key), "SP_CERT_FILE": str(sp_cert),
            "SIGN_REQUESTS": "true", "REQUIRE_ENCRYPTED_ASSERTIONS": "true",
        }  # fmt: skip
        (folder / "data").mkdir()
        server = Serve(
            data_dir=folder / "data",
            http_port=port,
            turn_port=free_port(),
            relay_ports=private_relay_range(),
            log_path=folder / "serve.log",
            env={f"CALLGATE_IDENTITY__SAML__{k}": v for k, v in env.items()},
        ).start()
        try:
            sp_metadata = httpx.get(f"{server.url}/api/saml/metadata", timeout=30).content
            (folder / "sp-metadata.xml").write_bytes(sp_metadata)
            yield Setup(folder, idp_port, server)
        finally:
            code = server.stop()
        assert code == 0 and "Traceback" not in server.log(), server.log()
    finally:
        idp.terminate()
        idp.wait(timeout=30)


def test_metadata_publishes_our_key_for_signing_and_encryption(setup: Setup) -> None:
    text = (setup.folder / "sp-metadata.xml").read_text()
    assert 'AuthnRequestsSigned="true"' in text
    assert 'use="signing"' in text and 'use="encryption"' in text
    ours = (setup.folder / "sp.crt").read_text().splitlines()[1]
    assert ours in text  # the certificate of sp_cert_file


def test_signed_request_and_encrypted_assertion_sign_carol_in(setup: Setup) -> None:
    with httpx.Client(timeout=30) as browser:
        start = browser.get(f"{setup.serve.url}/api/saml/login", params={"next": "/console"})
        redirect = start.headers["location"]
        query = parse_qs(urlsplit(redirect).query)
        assert query["SigAlg"] == ["http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"]
        assert query["Signature"]
        # The IdP checks the signature: a changed RelayState no longer matches it.
        tampered = redirect.replace("RelayState=", "RelayState=x")
        refused = browser.get(tampered)
        assert refused.status_code == 400 and "IncorrectlySigned" in refused.text, refused.text
        sign_in = browser.get(redirect)
        assert sign_in.status_code == 200, sign_in.text
        _action, hidden = form_fields(sign_in.text)
        posted = browser.post(
            f"http://127.0.0.1:{setup.idp_port}/sso/login",
            data={"request": hidden["request"], "user": "carol", "password": "carol-secret"},
        )
        assert posted.status_code == 200, posted.text
        action, fields = form_fields(posted.text)
        xml = base64.b64decode(fields["SAMLResponse"]).decode()
        assert "EncryptedAssertion" in xml and "Carol Jones" not in xml  # not in the clear
        back = browser.post(action, data=fields)
    assert back.status_code == 303, back.text
    assert back.headers["location"].startswith("/console#sso_token="), back.headers["location"]


def test_an_assertion_in_the_clear_is_refused(setup: Setup) -> None:
    clear_idp = SamlTestIdp(setup.idp_args(encrypt_assertions=False))  # same IdP, no encryption
    with httpx.Client(timeout=30) as browser:
        redirect = browser.get(f"{setup.serve.url}/api/saml/login").headers["location"]
        page = clear_idp.sign_in_form(parse_qs(urlsplit(redirect).query))
        _action, hidden = form_fields(page)
        answer = clear_idp.answer(
            {"request": [hidden["request"]], "user": ["carol"], "password": ["carol-secret"]}
        )
        action, fields = form_fields(answer)
        assert "Carol Jones" in base64.b64decode(fields["SAMLResponse"]).decode()
        back = browser.post(action, data=fields)
    assert back.status_code == 303
    assert back.headers["location"].endswith("#sso_error=assertion%20rejected%3A%20not%20encrypted")


def test_key_settings_are_checked(tmp_path: Path) -> None:
    key, cert = _keypair(tmp_path, "sp")
    base = {
        "enabled": True, "idp_metadata_file": tmp_path / "idp.xml",
        "sp_entity_id": "https://callgate.example/api/saml/metadata",
        "acs_url": "https://callgate.example/api/saml/acs",
    }  # fmt: skip
    with pytest.raises(ValidationError, match="sp_key_file and sp_cert_file go together"):
        SamlSettings(**base, sp_key_file=key)
    with pytest.raises(ValidationError, match="need sp_key_file and sp_cert_file"):
        SamlSettings(**base, sign_requests=True)
    key.chmod(0o640)
    with pytest.raises(ValueError, match="must be 0600 or stricter"):
        sp_config(SamlSettings(**base, sp_key_file=key, sp_cert_file=cert))
