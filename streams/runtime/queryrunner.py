"""Queries of the worker's web pages on a thread and a session of their own.

The ingestion's ClickHouse session and thread never see them: a page's query can slow the
worker by one core at most (the session's ``max_threads``), never block its inserts. The
session opens on first use.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import faust
from mode.types.signals import BaseSignalT

from streams.errors import CoalmineError
from streams.storage import sqlsession

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueryBusyError(CoalmineError):
    """More queries asked for at once than the runner takes."""


class QueryRunner:
    """Calls on one session, one at a time, with at most ``max_waiting`` more waiting their
    turn; beyond that a call is refused at once with :class:`QueryBusyError` (``busy``)."""

    def __init__(
        self,
        open_session: Callable[[], sqlsession.QuerySession],
        *,
        name: str,
        busy: str,
        max_waiting: int = 0,
    ) -> None:
        self._open_session = open_session
        self._session: sqlsession.QuerySession | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._busy_message = busy
        # Released by the call's thread when it ends, not when its caller stops waiting.
        self._slots = threading.BoundedSemaphore(1 + max_waiting)

    async def call(self, work: Callable[[sqlsession.QuerySession], T]) -> T:
        if not self._slots.acquire(blocking=False):
            raise QueryBusyError(self._busy_message)
        try:
            future = self._pool.submit(self._call, work)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(future)

    def _call(self, work: Callable[[sqlsession.QuerySession], T]) -> T:
        if self._session is None:
            self._session = self._open_session()
        return work(self._session)

    def close(self) -> None:
        """Waits for the running and waiting calls (each at most its time limit), then
        closes the session."""
        self._pool.shutdown(wait=True)
        if self._session is not None:
            self._session.close()


def close_on_shutdown(app: faust.App, runner: QueryRunner, whose: str) -> None:
    """Close ``runner`` when ``app`` stops, before the ClickHouse it queries goes away."""

    @app.on_before_shutdown.connect
    async def close_queries(
        sender: faust.App, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, runner.close)
        except Exception:
            log.exception("closing the query session of %s failed", whose)
