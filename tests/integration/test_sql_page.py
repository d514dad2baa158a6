"""The worker's /sql page under attack, while the worker keeps storing spans from the SDK.

Every attack that worked against the old page is sent the way a user sends it (`coalmine
sql`, or a raw HTTP request for the ones a browser would make) and is refused, nothing is
written, and the worker stores every span produced meanwhile, during a query that runs to
its time limit and after a refused statement.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams import sqlcli
from streams.devtools.worker_process import WorkerProcess
from streams.runtime import sqlpage
from streams.settings import Settings
from streams.storage.sqlguard import QueryRefusedError
from streams.storage.sqlsession import LIMITS, QueryFailedError
from tests.integration.harness import SpanStream, isolated_settings, running_worker, wait_for
from tests.integration.test_sql_session import ATTACKS, LIMITED, OUTFILE

pytestmark = pytest.mark.integration

HEAVY = "SELECT count() FROM system.numbers WHERE sipHash64(number) = 0"


@pytest.fixture
def worker(kafka_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    with running_worker(isolated_settings(kafka_settings, tmp_path), tmp_path / "worker.log") as w:
        yield w


def stored(worker: WorkerProcess) -> int:
    return int(worker.health()["spans_written"])


def wait_stored_more(worker: WorkerProcess, than: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (now := stored(worker)) > than:
            return now
        time.sleep(0.2)
    raise AssertionError(f"the worker stored no span in {timeout_s} s (still {than})")


def post(
    worker: WorkerProcess, body: bytes, headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, Any]]:
    """A raw request to /sql; the status and the JSON document answered."""
    request = urllib.request.Request(
        f"{worker.settings.worker_url}{sqlpage.PATH}", data=body, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_attacks_are_refused_while_ingestion_keeps_storing(worker: WorkerProcess) -> None:
    settings = worker.settings
    token = sqlpage.read_token(settings)
    with SpanStream(settings) as spans:
        count = wait_stored_more(worker, 0)

        for query, reason in {**ATTACKS, **LIMITED}.items():
            with pytest.raises((QueryRefusedError, QueryFailedError), match=reason):
                sqlcli.fetch(settings, query)
        # A refused statement leaves the worker's inserts working (the old page did not).
        count = wait_stored_more(worker, count)

        heavy: list[BaseException] = []
        started = time.monotonic()
        running = threading.Thread(
            target=lambda: _capture(heavy, lambda: sqlcli.fetch(settings, HEAVY))
        )
        running.start()
        time.sleep(1.0)
        with pytest.raises(QueryFailedError, match="another query is running"):
            sqlcli.fetch(settings, "SELECT 1")
        during = [count]
        while running.is_alive():
            during.append(wait_stored_more(worker, during[-1]))
            assert worker.health()["status"] == "ok"
        running.join()
        elapsed = time.monotonic() - started
        assert len(heavy) == 1 and "Timeout exceeded" in str(heavy[0])
        assert len(during) >= 3  # the count of stored spans kept rising under the query
        print(f"heavy query stopped after {elapsed:.1f} s; spans stored meanwhile: {during}")

        with pytest.raises(QueryFailedError, match="only SELECT and DESCRIBE"):
            sqlcli.fetch(settings, "DROP TABLE IF EXISTS default.nope")
        wait_stored_more(worker, during[-1])

    produced = spans.produced
    query_all = "SELECT count() FROM coalmine.spans WHERE agent = 'sql-page-bot'"
    assert wait_for(worker, query_all, produced) == produced

    assert sqlcli.fetch(settings, "SELECT count() FROM system.tables WHERE database = 'default'")[
        1
    ] == [[0]]
    assert not Path(OUTFILE).exists()
    assert sqlcli.fetch(settings, "SELECT 41 + 1")[1] == [[42]]

    good = {
        "Host": f"127.0.0.1:{settings.worker_port}",
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
    }
    select = json.dumps({"query": "SELECT 1"}).encode()
    refusals = [
        (select, {**good, "Host": f"rebound.example:{settings.worker_port}"}, 403),
        (select, {**good, "Origin": "http://evil.example"}, 403),
        (select, {k: v for k, v in good.items() if k != "Authorization"}, 401),
        (select, {**good, "Authorization": "Bearer guess"}, 401),
        (select, {**good, "Content-Type": "text/plain"}, 415),
        (b"SELECT 1", good, 400),
        (b'{"query": ', good, 400),
        (b"\xff\xfe", good, 400),
        (b"[]", good, 400),
        (json.dumps({"query": "x" * sqlpage.MAX_BODY_BYTES}).encode(), good, 413),
    ]
    for body, headers, status in refusals:
        answered, document = post(worker, body, headers)
        assert (answered, set(document)) == (status, {"error"}), (headers, body[:20])
    assert post(worker, b"", good, method="GET")[0] == 405
    assert post(worker, select, good) == (200, {"columns": ["1"], "rows": [[1]]})
    assert "Traceback" not in worker.log_path.read_text(errors="replace")


def _capture(errors: list[BaseException], call: Any) -> None:
    try:
        call()
    except BaseException as exc:  # handed to the test's thread
        errors.append(exc)


def test_sigterm_stops_the_worker_during_a_heavy_query(worker: WorkerProcess) -> None:
    """The worker waits for the query (at most its time limit), then exits cleanly;
    WorkerProcess.stop fails if it ignores SIGTERM."""
    errors: list[BaseException] = []
    running = threading.Thread(
        target=lambda: _capture(errors, lambda: sqlcli.fetch(worker.settings, HEAVY))
    )
    running.start()
    time.sleep(2.0)
    started = time.monotonic()
    assert worker.stop() == 0
    print(f"worker stopped {time.monotonic() - started:.1f} s after SIGTERM during a heavy query")
    running.join()
    assert len(errors) == 1


def test_the_longest_query_allowed_is_answered_and_a_longer_one_refused_at_once(
    worker: WorkerProcess,
) -> None:
    """Speeds are reported (pytest -s), not asserted."""
    settings = worker.settings
    longest = "SELECT 1" + " " * (LIMITS.max_query_chars - len("SELECT 1"))
    started = time.monotonic()
    assert sqlcli.fetch(settings, longest)[1] == [[1]]
    print(f"{len(longest):,}-character query answered in {time.monotonic() - started:.3f} s")
    for spaces in (LIMITS.max_query_chars, 300_000):
        started = time.monotonic()
        with pytest.raises(QueryRefusedError, match="characters long"):
            sqlcli.fetch(settings, "SELECT 1" + " " * spaces)
        print(f"SELECT 1 + {spaces:,} spaces refused in {time.monotonic() - started:.4f} s")
    body = json.dumps({"query": "SELECT 1" + " " * 300_000}).encode()
    headers = {
        "Authorization": f"Bearer {sqlpage.read_token(settings)}",
        "Content-Type": "application/json",
    }
    started = time.monotonic()
    status, document = post(worker, body, headers)
    print(f"the same sent to the page: {status} in {time.monotonic() - started:.4f} s")
    assert (status, set(document)) == (413, {"error"})
