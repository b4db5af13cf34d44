"""The SIP parts of the web UI (docs/sip.md): a number typed in the softphone's dial box is
placed by the server, which refuses it with the policy's words when the user may not dial out;
something that is not a number is not sent; the console's Trunks page shows the trunk's state."""

from __future__ import annotations

from typing import Any

from tests.browser.helpers import sign_in, wait_status
from tests.e2e.helpers import Serve


def test_the_dial_box_places_numbers_and_the_server_decides(serve: Serve, new_page: Any) -> None:
    alice = new_page()
    sign_in(alice, serve.url, "alice")
    alice.locator("#conn").filter(has_text="Online").wait_for()
    alice.get_by_label("Number").fill("not a number")
    alice.get_by_role("button", name="Dial").click()
    alice.locator("#notice").filter(has_text="Type a phone number").wait_for()

    alice.get_by_label("Number").fill("+44 20 7946 0000")
    alice.get_by_role("button", name="Dial").click()
    text = wait_status(alice, "Company policy does not allow this call")
    assert "no dial-out rule for this user" in text and "trunk:uk" in text, text
    assert alice.evaluate("document.body.dataset.lastReason") == "policy-denied"

    root = new_page()
    sign_in(root, serve.url, "root", path="/console/trunks")
    row = root.locator('tr[data-trunk="uk"]')
    row.wait_for()
    assert row.get_attribute("data-state") == "idle"
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "uk" and cells[6] == "127.0.0.2:9" and cells[7] == "+44", cells
    assert cells[8] == "nobody (emergency only)" and cells[10] == "by address", cells
    assert cells[11] == "RTP, or SRTP if it offers", cells  # its srtp setting: "off"
    # nothing answers OPTIONS at 127.0.0.2:9: not known yet, or down after two pings
    reachable = row.locator("[data-reachable]").get_attribute("data-reachable")
    assert reachable in ("unknown", "down"), reachable
