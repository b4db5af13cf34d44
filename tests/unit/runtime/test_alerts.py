"""Alerts over real loopback sockets: the webhook is signed, retried on 5xx up to its limit and
not on a refusal; syslog messages are RFC 5424 with escaped structured data."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from callgate.runtime.alerts import SyslogSender, WebhookSender

SECRET = b"a-webhook-secret-of-some-length"


class Receiver:
    """An HTTP server on 127.0.0.1 answering POSTs with the statuses given, in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.done = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                code = receiver.statuses[min(len(receiver.requests), len(statuses)) - 1]
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?k=v"


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    server = Receiver(request.param)
    yield server
    server.server.shutdown()
    server.server.server_close()


async def deliver(receiver: Receiver, attempts: int) -> WebhookSender:
    sender = WebhookSender(receiver.url, SECRET, attempts=attempts, first_delay=0.01)
    sender.start()
    sender.submit({"event": "detect.finding", "finding": {"host": "10.0.0.5"}})
    await sender.stop(grace=30)
    return sender


@pytest.mark.parametrize("receiver", [[503, 500, 200]], indirect=True)
async def test_webhook_is_signed_and_retried_until_delivered(receiver: Receiver) -> None:
    sender = await deliver(receiver, attempts=5)
    assert (sender.delivered, sender.failed, sender.retries) == (1, 0, 2)
    assert len(receiver.requests) == 3
    headers, body = receiver.requests[-1]
    stamp = headers["X-Callgate-Timestamp"]
    mac = hmac.new(SECRET, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Callgate-Signature"] == f"sha256={mac}"
    assert json.loads(body)["finding"]["host"] == "10.0.0.5"


@pytest.mark.parametrize("receiver", [[500]], indirect=True)
async def test_webhook_gives_up_after_its_attempts(receiver: Receiver) -> None:
    sender = await deliver(receiver, attempts=3)
    assert (sender.delivered, sender.failed, len(receiver.requests)) == (0, 1, 3)


@pytest.mark.parametrize("receiver", [[401]], indirect=True)
async def test_a_refused_webhook_is_not_retried(receiver: Receiver) -> None:
    sender = await deliver(receiver, attempts=5)
    assert (sender.failed, sender.retries, len(receiver.requests)) == (1, 0, 1)


async def test_a_full_queue_drops_and_counts() -> None:
    sender = WebhookSender("http://127.0.0.1:9/", SECRET)  # never started: nothing is sent
    for _ in range(1005):
        sender.submit({})
    assert sender.dropped == 5
    await asyncio.sleep(0)


def test_syslog_message_is_rfc5424_with_escaped_structured_data() -> None:
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(10)
    sender = SyslogSender(("127.0.0.1", collector.getsockname()[1]))
    sender.send({"host": "10.0.0.5", "app": 'Odd "app"]', "peer": "203.0.113.9"})
    message = collector.recv(4096)
    sender.close()
    collector.close()
    head, _, rest = message.partition(b" [")
    pri_version, stamp, _host, app, pid, msgid = head.decode().split(" ")
    assert (pri_version, app, msgid) == ("<132>1", "callgate", "detect.finding")  # local0.warning
    assert stamp.endswith("Z") and "T" in stamp and pid.isdigit()
    assert b'app="Odd \\"app\\"\\]"' in rest and b'peer="203.0.113.9"' in rest
    assert rest.endswith(
        b'\xef\xbb\xbfunmanaged calling: 10.0.0.5 used Odd "app"] with 203.0.113.9'
    )
    assert sender.delivered == 1
