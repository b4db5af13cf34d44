"""A SAML 2.0 identity provider to try callgate's SAML sign-in on one machine (docs/identity.md,
"Connect to a SAML IdP on one machine"): pysaml2's IdP role (saml2.server.Server) served over
HTTP. Everything SAML is pysaml2's: reading the AuthnRequest (HTTP-Redirect binding, its
signature checked when the SP's metadata says it signs), building and signing the assertion
with xmlsec1, encrypting it to the SP's certificate, and the auto-submitting HTTP-POST form. This
file only serves it: a sign-in form and a people file. For trials and tests, never production.

    python tests/identity/saml_test_idp.py --port 9500 --key idp.key --cert idp.crt \
        --people people.json --sp-metadata sp-metadata.xml

    GET  /metadata    the IdP's metadata (entity id http://HOST:PORT/metadata, SSO URL, certificate)
    GET  /sso         an AuthnRequest (HTTP-Redirect binding): the sign-in form
    POST /sso/login   the form (user, password): the signed Response, posted to the SP's ACS

people.json: {"carol": {"password": "...", "name_id": "p-carol", "attributes":
{"uid": ["carol"], "displayName": ["Carol Jones"], "groups": ["voice-admins"]}}}. The SP's
metadata file is read again whenever it changes, so it may be saved after the IdP started.
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
import secrets
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

with warnings.catch_warnings():  # pysaml2 names a cipher mode cryptography has moved (CFB)
    warnings.simplefilter("ignore")
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig
    from saml2.metadata import create_metadata_string
    from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
    from saml2.server import Server

SHA256_SIGNATURE = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256_DIGEST = "http://www.w3.org/2001/04/xmlenc#sha256"
PASSWORD_AUTHN = {"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"}
MAX_BODY = 64 * 1024
MAX_PENDING = 1000

FORM = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Test IdP: sign in</title></head>
<body><h1>Test IdP</h1><p>Sign in to {sp}</p>
<form method="post" action="/sso/login">
<input type="hidden" name="request" value="{key}">
<label>User <input name="user" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>{error}</body></html>"""


class SamlTestIdp:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base = f"http://{args.host}:{args.port}"
        self.entity_id = f"{self.base}/metadata"
        self.args = args
        self.people: dict[str, dict[str, Any]] = json.loads(Path(args.people).read_text())
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._sp_mtime = 0.0
        self._pending: dict[str, tuple[Any, str]] = {}  # form key -> (AuthnRequest, RelayState)

    def config(self, sp_metadata: Path | None) -> IdPConfig:
        sso = f"{self.base}/sso"
        settings: dict[str, Any] = {
            "entityid": self.entity_id,
            "key_file": self.args.key,
            "cert_file": self.args.cert,
            "xmlsec_binary": self.args.xmlsec,
            "signing_algorithm": SHA256_SIGNATURE,
            "digest_algorithm": SHA256_DIGEST,
            "service": {
                "idp": {
                    "endpoints": {"single_sign_on_service": [(sso, BINDING_HTTP_REDIRECT)]},
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    "want_authn_requests_signed": self.args.want_signed_requests,
                    "policy": {
                        "default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}
                    },
                }
            },
        }
        if sp_metadata is not None:
            settings["metadata"] = {"local": [str(sp_metadata)]}
        config = IdPConfig()
        config.load(settings)
        return config

    def metadata(self) -> bytes:
        document = create_metadata_string(None, self.config(None))
        return document if isinstance(document, bytes) else str(document).encode()

    def server(self) -> Server:
        """pysaml2's IdP, knowing the SP's metadata as the file is now."""
        path = Path(self.args.sp_metadata)
        if not path.exists():
            raise LookupError(f"no SP metadata yet: save the SP's metadata to {path}")
        mtime = path.stat().st_mtime
        if self._server is None or mtime != self._sp_mtime:
            self._server = Server(config=self.config(path))
            self._sp_mtime = mtime
        return self._server

    def sign_in_form(self, query: dict[str, list[str]]) -> str:
        request = query.get("SAMLRequest", [""])[0]
        relay_state = query.get("RelayState", [""])[0]
        with self._lock:
            server = self.server()
            parsed = server.parse_authn_request(
                request,
                BINDING_HTTP_REDIRECT,
                relay_state=relay_state or None,
                sigalg=query.get("SigAlg", [None])[0],
                signature=query.get("Signature", [None])[0],
            )
            if self.args.want_signed_requests and not query.get("Signature"):
                raise ValueError("this IdP wants signed AuthnRequests")
            while len(self._pending) >= MAX_PENDING:
                del self._pending[next(iter(self._pending))]
            key = secrets.token_urlsafe(24)
            self._pending[key] = (parsed.message, relay_state)
        sp = html.escape(str(parsed.message.issuer.text))
        return FORM.format(sp=sp, key=key, error="")

    def answer(self, form: dict[str, list[str]]) -> str:
        """The auto-submitting form carrying the signed Response to the SP's ACS."""
        key = form.get("request", [""])[0]
        user = form.get("user", [""])[0]
        password = form.get("password", [""])[0]
        with self._lock:
            message, relay_state = self._pending.pop(key, (None, ""))
            if message is None:
                raise ValueError("unknown or already used sign-in")
            person = self.people.get(user)
            expected = str(person.get("password", "")) if person else secrets.token_hex(16)
            if not hmac.compare_digest(expected.encode(), password.encode()) or person is None:
                self._pending[key] = (message, relay_state)  # another try
                raise PermissionError("wrong user or password")
            server = self.server()
            sp = message.issuer.text
            destination = message.assertion_consumer_service_url
            response = server.create_authn_response(
                identity=person.get("attributes", {}),
                in_response_to=message.id,
                destination=destination,
                sp_entity_id=sp,
                name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=person.get("name_id", user)),
                authn=PASSWORD_AUTHN,
                sign_assertion=True,
                sign_response=False,
                encrypt_assertion=self.args.encrypt_assertions,
                encrypt_cert_assertion=None,
            )
            posted = server.apply_binding(
                BINDING_HTTP_POST, str(response), destination, relay_state, response=True
            )
        return str(posted["data"])


def handler(idp: SamlTestIdp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def reply(self, code: int, body: bytes | str, kind: str = "text/html") -> None:
            data = body.encode() if isinstance(body, str) else body
            self.send_response(code)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metadata":
                self.reply(200, idp.metadata(), "application/samlmetadata+xml")
            elif url.path == "/sso":
                self.guarded(lambda: idp.sign_in_form(parse_qs(url.query)))
            else:
                self.reply(404, "not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if urlsplit(self.path).path != "/sso/login" or not 0 < length <= MAX_BODY:
                self.reply(404, "not found", "text/plain")
                return
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            self.guarded(lambda: idp.answer(form))

        def guarded(self, make: Any) -> None:
            try:
                self.reply(200, make())
            except PermissionError as exc:
                self.reply(401, f"{exc}: go back and try again", "text/plain")
            except Exception as exc:  # a bad request: say what pysaml2 said, briefly
                self.reply(400, f"refused: {type(exc).__name__}: {exc}"[:300], "text/plain")

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"saml-test-idp: {format % args}\n")

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9500)
    parser.add_argument("--key", required=True, help="PEM private key signing the assertions")
    parser.add_argument("--cert", required=True, help="its PEM certificate (in the metadata)")
    parser.add_argument("--people", required=True, help="JSON file of who may sign in")
    parser.add_argument("--sp-metadata", required=True, help="the SP's metadata XML file")
    parser.add_argument("--xmlsec", default="/usr/bin/xmlsec1")
    parser.add_argument(
        "--want-signed-requests", action="store_true", help="refuse unsigned AuthnRequests"
    )
    parser.add_argument(
        "--encrypt-assertions",
        action="store_true",
        help="encrypt assertions to the SP's encryption certificate (from its metadata)",
    )
    args = parser.parse_args(argv)
    idp = SamlTestIdp(args)
    httpd = ThreadingHTTPServer((args.host, args.port), handler(idp))
    print(f"saml-test-idp: {idp.entity_id} ready", file=sys.stderr, flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
