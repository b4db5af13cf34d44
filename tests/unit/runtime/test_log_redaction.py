"""Secrets never reach the log: the signaling URL carries the bearer token, and uvicorn logs it
when a WebSocket is accepted."""

from __future__ import annotations

import logging

import pytest

from callgate.runtime import setup_logging


def test_tokens_in_logged_urls_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO")
    try:
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/ws?token=S3cr3t-T0k3n&device=x"
        )
        logging.getLogger("callgate.test").warning("retry with password=hunter2 in a URL")
    finally:
        logging.basicConfig(force=True)
    err = capsys.readouterr().err
    assert "S3cr3t-T0k3n" not in err and "hunter2" not in err
    assert "/ws?token=***&device=x" in err
    assert "password=***" in err
