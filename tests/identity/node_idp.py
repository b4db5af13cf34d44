"""An OpenID provider nobody here wrote, with the device authorization grant (RFC 8628): panva's
certified `oidc-provider` from npm (tests/identity/idp: package.json, package-lock.json, the
idp.mjs that configures it), run with Debian's or the machine's Node.js on loopback.
`scripts/test` installs it (`npm ci`); without Node.js or the package the tests that need it are
skipped, except under CI (CI=true), where they fail.

`approve` plays the person at the provider's development sign-in pages: it opens the
verification URI, types the user code, signs in (any password) and consents, or aborts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import free_port

HERE = Path(__file__).parent / "idp"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def missing() -> str | None:
    if shutil.which("node") is None:
        return "node missing: apt-get install nodejs npm (scripts/test does)"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        return f"oidc-provider missing: npm ci --prefix {HERE} (scripts/test does)"
    return None


def need_node_idp() -> None:
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must run the device sign-in tests)")
    pytest.skip(reason)


@contextlib.contextmanager
def node_idp(
    log_path: Path, client: dict[str, Any], people: dict[str, dict[str, Any]]
) -> Iterator[str]:
    """The provider on a free loopback port, serving `client` and `people` ({login: claims});
    yields its issuer URL."""
    need_node_idp()
    port = free_port()
    env = {**os.environ, "IDP_CLIENT": json.dumps(client), "IDP_PEOPLE": json.dumps(people)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["node", str(HERE / "idp.mjs"), str(port)], env=env, stdout=log, stderr=log
        )
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while "listening" not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the provider did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield issuer
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class _Forms(HTMLParser):
    """The forms of a page: action, fields (inputs) and buttons (submit), by name."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "form":
            self.forms.append({"action": named.get("action"), "fields": {}, "buttons": {}})
        elif tag in ("input", "button") and self.forms and named.get("name"):
            kind = "buttons" if tag == "button" or named.get("type") == "submit" else "fields"
            self.forms[-1][kind][named["name"]] = named.get("value") or ""


def _form(page: httpx.Response) -> dict[str, Any]:
    parser = _Forms()
    parser.feed(page.text)
    assert parser.forms, f"no form at {page.url}: {page.text[:300]}"
    return parser.forms[0]


def _submit(browser: httpx.Client, page: httpx.Response, **values: str) -> httpx.Response:
    form = _form(page)
    fields = {**form["fields"], **values}
    answer = browser.post(page.url.join(form["action"] or str(page.url)), data=fields)
    assert answer.status_code == 200, answer.text[:300]
    return answer


def approve(verification_uri: str, user_code: str, login: str, consent: bool = True) -> str:
    """Open the verification page, enter the code, sign in as `login`, then consent (or
    abort): the text of the page the provider ends on."""
    with httpx.Client(follow_redirects=True, timeout=10) as browser:
        page = browser.get(verification_uri)
        page = _submit(browser, page, user_code=user_code)  # "enter the code"
        if not consent:
            return _submit(browser, page, abort="yes").text  # "is it you?": no
        page = _submit(browser, page, confirm="yes")  # "is it you?": yes
        page = _submit(browser, page, login=login, password="any")  # sign in
        return _submit(browser, page).text  # consent
