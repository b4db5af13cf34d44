"""The browser pages as served (no browser): HTML, security headers, every ES module present and
local, the console sections, and the softphone's directory with presence."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.api.app import create_app
from callgate.api.deps import Services
from callgate.api.routes.directory import directory_router, presence_by_handle
from callgate.records.cdr import CdrRepository
from callgate.storage.db import Store
from callgate.web.pages import CONSOLE_PAGES

STATIC = Path(__file__).resolve().parents[3] / "src" / "callgate" / "web" / "static"
CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)


@pytest.fixture
def services(store: Store) -> Services:
    accounts = AccountService(store, "callgate", passwords=Passwords(CHEAP))
    accounts.create_user("alice", "Alice Archer", (), "pw-alice")
    accounts.create_user("bob", "Bob Baker", (), "pw-bob")
    accounts.create_user("carol", "Carol Cole", (), "pw-carol")
    accounts.create_user("dave", "Dave Gone", (), "pw-dave")
    accounts.set_disabled("dave", True)
    return Services(accounts=accounts, cdrs=CdrRepository(store))


def fake_hub(devices: dict[str, str], calls: dict[str, str]) -> Any:
    """What the directory reads of a SignalingHub: devices (id → handle) and engine.call_of."""
    return SimpleNamespace(
        devices={i: SimpleNamespace(device_id=i, handle=h) for i, h in devices.items()},
        engine=SimpleNamespace(call_of=calls.get),
    )


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    hub = fake_hub({"d1": "bob", "d2": "carol", "d3": "carol"}, {"d3": "call-1"})
    app = create_app(
        registry=CollectorRegistry(), services=services, routers=[directory_router(hub)]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_the_softphone_page_is_html_with_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    html = response.text
    assert '<script type="module" src="/static/js/softphone.js' in html
    for field in ("handle", "password", "search"):  # every input has a label
        assert f'for="{field}"' in html and f'id="{field}"' in html
    assert 'aria-live="assertive"' in html  # call status is announced


@pytest.mark.parametrize("section", sorted(CONSOLE_PAGES))
async def test_each_console_section_loads_its_module_and_marks_itself_current(
    client: httpx.AsyncClient, section: str
) -> None:
    response = await client.get(f"/console/{section}")
    assert response.status_code == 200
    title, module = CONSOLE_PAGES[section]
    assert f"/static/js/console/{module}" in response.text
    assert re.search(rf'href="/console/{section}" aria-current="page">{title}<', response.text)
    script = await client.get(f"/static/js/console/{module}")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]


async def test_unknown_console_pages_are_404_and_call_ids_are_escaped(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/console/secrets")
    assert response.status_code == 404
    assert response.json() == {"detail": "no console page 'secrets'"}
    detail = await client.get('/console/records/x"><img src=x onerror=alert(1)>')
    assert detail.status_code == 200
    assert "<img src=x" not in detail.text
    assert 'data-call-id="x&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"' in detail.text
    assert (await client.get("/static/../pages.py")).status_code == 404


def test_every_module_import_resolves_to_a_local_file_and_nothing_loads_from_elsewhere() -> None:
    files = sorted(STATIC.rglob("*.js")) + sorted(STATIC.rglob("*.css"))
    assert len(files) >= 10
    for path in files:
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)[a-z0-9]", text), path
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', text):
            assert (path.parent / target).resolve().is_file(), f"{path.name} imports {target}"


async def test_the_directory_lists_colleagues_with_presence_but_not_yourself(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/api/directory")).status_code == 401
    login = await client.post("/api/login", json={"handle": "alice", "password": "pw-alice"})
    token = login.json()["token"]
    response = await client.get("/api/directory", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {
        "users": [
            {"handle": "bob", "display_name": "Bob Baker", "presence": "online"},
            {"handle": "carol", "display_name": "Carol Cole", "presence": "in-call"},
        ]
    }


def test_presence_is_in_call_when_any_device_carries_a_call() -> None:
    devices = [("a1", "ann"), ("b1", "ben"), ("b2", "ben"), ("c1", "cy")]
    calls = {"b1": "call-9"}
    assert presence_by_handle(devices, calls.get) == {
        "ann": "online",
        "ben": "in-call",
        "cy": "online",
    }
    assert presence_by_handle(list(reversed(devices)), calls.get)["ben"] == "in-call"
