"""Alerts for fresh unsanctioned findings of the monitor (docs/detection.md, "Alerts").

- `SyslogSender`: one RFC 5424 message per finding over UDP (RFC 5426), facility local0,
  severity warning, the finding as structured data.
- `WebhookSender`: a JSON POST per finding, signed: `X-Callgate-Timestamp: T` and
  `X-Callgate-Signature: sha256=HEX`, HEX = HMAC-SHA256(secret, "T." + body). Delivered in order
  by one task; a 5xx, 408, 429, timeout or connection error is retried with doubling delays, up to
  `attempts` tries in all; another 4xx gives up at once. At most `MAX_QUEUED` wait (more are
  dropped and counted). Redirects are not followed.

Counters (`delivered`, `failed`, `dropped`, `retries`) are read by the Prometheus collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from callgate import __version__
from callgate.types import Address

if TYPE_CHECKING:
    import httpx  # with rich and pygments ~0.25 s of `serve`'s start: loaded by a webhook

log = logging.getLogger(__name__)

MAX_QUEUED = 1000
LOCAL0, WARNING = 16, 4  # RFC 5424 §6.2.1 facility local0, severity warning
SD_ID = "finding@32473"  # 32473: the enterprise number RFC 5612 reserves for examples
_RETRY_STATUS = {408, 429}


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Callgate-Signature value of `body` sent at `timestamp`."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _sd_value(value: object) -> str:
    """A structured-data parameter value, escaped as RFC 5424 §6.3.3 says."""
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(finding: dict[str, Any], hostname: str, pid: int) -> bytes:
    """The RFC 5424 message (§6) for one finding."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    keys = ("host", "app", "peer", "interface", "first_seen", "path", "confidence")
    params = " ".join(f'{k}="{_sd_value(finding.get(k, ""))}"' for k in keys)
    text = (
        f"unmanaged calling: {finding.get('host')} used {finding.get('app')} "
        f"with {finding.get('peer')}"
    )
    head = (
        f"<{LOCAL0 * 8 + WARNING}>1 {stamp} {hostname[:255] or '-'} callgate {pid} detect.finding"
    )
    return f"{head} [{SD_ID} {params}] ".encode() + b"\xef\xbb\xbf" + text.encode()


class SyslogSender:
    """RFC 5424 over UDP to one collector; a send that fails is counted, never raised."""

    def __init__(self, target: Address) -> None:
        self.target = target
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._hostname = socket.gethostname()
        self.delivered = self.failed = 0

    def send(self, finding: dict[str, Any]) -> None:
        try:
            self._sock.sendto(syslog_message(finding, self._hostname, os.getpid()), self.target)
            self.delivered += 1
        except OSError as exc:
            self.failed += 1
            log.warning("syslog alert to %s:%d not sent: %s", *self.target, exc)

    def close(self) -> None:
        self._sock.close()


class WebhookSender:
    """Signed JSON POSTs to one URL, from a bounded queue, with limited retries."""

    def __init__(
        self, url: str, secret: bytes, *, attempts: int = 5, timeout: float = 5.0,
        first_delay: float = 1.0, max_delay: float = 60.0,
    ) -> None:  # fmt: skip
        self.url, self.attempts, self.timeout = url, attempts, timeout
        self.first_delay, self.max_delay = first_delay, max_delay
        self._secret = secret
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_QUEUED)
        self._task: asyncio.Task[None] | None = None
        self.delivered = self.failed = self.dropped = self.retries = 0

    def submit(self, payload: dict[str, Any]) -> None:
        """Queue one payload (on the event loop's thread); dropped and counted when full."""
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.dropped += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="detect-webhook")

    async def stop(self, grace: float = 2.0) -> None:
        """Deliver what is queued for up to `grace` seconds, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        import httpx

        headers = {"User-Agent": f"callgate/{__version__}"}
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                     headers=headers) as client:  # fmt: skip
            while True:
                payload = await self._queue.get()
                try:
                    await self._deliver(client, payload)
                finally:
                    self._queue.task_done()

    async def _deliver(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> None:
        import httpx

        body = json.dumps(payload, separators=(",", ":")).encode()
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            stamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Callgate-Timestamp": stamp,
                       "X-Callgate-Signature": signature(self._secret, stamp, body)}  # fmt: skip
            try:
                answer = await client.post(self.url, content=body, headers=headers)
                outcome = f"HTTP {answer.status_code}"
                if answer.is_success:
                    self.delivered += 1
                    return
                if answer.status_code < 500 and answer.status_code not in _RETRY_STATUS:
                    break  # the receiver refuses it: sending it again would not help
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            if attempt < self.attempts:
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
        self.failed += 1
        log.warning("webhook alert not delivered (%s after %d attempt(s))", outcome, attempt)
