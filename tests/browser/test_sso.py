"""Single sign-on in Chromium: "Sign in with Example Corp" on the softphone and the console,
through the real redirects to an OpenID provider nobody here wrote (oidc-provider-mock) and back;
the person picks their account on the provider's own form."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from oidc_provider_mock import run_server_in_thread

from tests.e2e.helpers import Serve
from tests.identity.oidc_support import PEOPLE, sso_serve


@pytest.fixture(scope="module")
def sso_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with run_server_in_thread(require_nonce=True, user_claims=PEOPLE) as provider:
        issuer = f"http://localhost:{provider.server_port}"
        with sso_serve(tmp_path_factory.mktemp("sso-browser"), issuer) as server:
            yield server


def sign_in_with_sso(page: Any, sub: str) -> None:
    link = page.get_by_role("link", name="Sign in with Example Corp")
    link.click()
    page.locator("input[name=sub]").fill(sub)  # the provider's own consent form
    page.get_by_role("button", name="Authorize").click()


def test_softphone_signs_in_through_the_provider(sso_server: Serve, new_page: Any) -> None:
    page = new_page()
    page.goto(f"{sso_server.url}/")
    sign_in_with_sso(page, "sub-carol")
    page.wait_for_url(f"{sso_server.url}/")
    page.locator("#phone").wait_for(state="visible")
    assert "sso_token" not in page.url  # the token left the address bar at once
    assert page.evaluate("sessionStorage.getItem('callgate.token')")


def test_console_signs_in_and_a_refusal_is_shown(sso_server: Serve, new_page: Any) -> None:
    page = new_page()
    page.goto(f"{sso_server.url}/console")
    sign_in_with_sso(page, "sub-carol")
    page.locator("#content").wait_for(state="visible")
    assert "sso_token" not in page.url

    refused = new_page()
    refused.goto(f"{sso_server.url}/console")
    sign_in_with_sso(refused, "sub-dan")  # "Dan Space" is not a usable handle
    error = refused.locator("#signin-error")
    error.filter(has_text="Single sign-on failed").wait_for()
    assert "preferred_username is not a usable handle" in error.inner_text()
