"""The alert webhook in the worker: an aiohttp POST as the
:class:`~streams.alerts.webhook.WebhookSender`'s transport, and the sender's task."""

from __future__ import annotations

import asyncio
from typing import Final

import aiohttp
import faust

from streams.alerts.webhook import WebhookSender
from streams.settings import Settings

MAX_ANSWER_BYTES: Final = 64 * 1024
"""What is read of an answer at most (and thrown away): the status is all that counts."""


class HttpTransport:
    """POSTs JSON to ``url`` with an optional bearer token; no redirects followed (a
    redirect is an answer, refused like a 4xx), ``timeout_s`` for the whole exchange."""

    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        self._url = url
        self._headers = {"Content-Type": "application/json", "User-Agent": "coalmine-alerts"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, body: bytes) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.post(
            self._url, data=body, headers=self._headers, allow_redirects=False
        ) as answer:
            await answer.content.read(MAX_ANSWER_BYTES)
            return answer.status

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def install(app: faust.App, settings: Settings) -> WebhookSender | None:
    """A sender for ``COALMINE_ALERT_WEBHOOK_URL`` delivering from a task of ``app``; None
    when the setting is empty."""
    if not settings.alert_webhook_url:
        return None
    transport = HttpTransport(
        settings.alert_webhook_url, settings.alert_webhook_token, settings.alert_webhook_timeout_s
    )
    sender = WebhookSender(
        transport,
        attempts=settings.alert_webhook_attempts,
        capacity=settings.alert_webhook_queue,
    )

    async def post_alerts() -> None:
        try:
            await sender.run()
        finally:  # the worker stopping cancels the task
            await asyncio.shield(transport.close())

    app.task(post_alerts)
    return sender
