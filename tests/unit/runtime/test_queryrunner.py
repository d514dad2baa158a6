from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import pytest

from streams.runtime.queryrunner import QueryBusyError, QueryRunner
from streams.storage.sqlsession import QuerySession


class Session:
    """Stands in for the query session: the runner only hands it to the calls."""

    closed = False

    def close(self) -> None:
        self.closed = True


def test_calls_run_one_at_a_time_a_few_wait_and_more_are_refused_at_once() -> None:
    session = Session()
    runner = QueryRunner(
        lambda: cast(QuerySession, session), name="t", busy="busy, try later", max_waiting=1
    )
    release = threading.Event()
    running = threading.Event()
    order: list[str] = []

    def slow(given: Any) -> str:
        assert given is session
        running.set()
        release.wait(10)
        order.append("slow")
        return "slow"

    def quick(given: Any) -> str:
        order.append("quick")
        return "quick"

    async def scenario() -> list[str]:
        first = asyncio.ensure_future(runner.call(slow))
        await asyncio.get_running_loop().run_in_executor(None, running.wait, 10)
        second = asyncio.ensure_future(runner.call(quick))  # waits its turn
        await asyncio.sleep(0)
        with pytest.raises(QueryBusyError, match="busy, try later"):
            await runner.call(quick)
        release.set()
        return [await first, await second]

    assert asyncio.run(scenario()) == ["slow", "quick"]
    assert order == ["slow", "quick"]
    assert asyncio.run(runner.call(quick)) == "quick"  # the slots are free again
    runner.close()
    assert session.closed


def test_a_failing_call_frees_its_slot() -> None:
    runner = QueryRunner(lambda: cast(QuerySession, Session()), name="t", busy="busy")

    def failing(_: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(runner.call(failing))
    assert asyncio.run(runner.call(lambda _: 42)) == 42
    runner.close()
