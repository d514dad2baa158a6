"""``coalmine sql``: read-only SQL, printed as a table, CSV or JSON.

chDB lets one process hold a data folder. While a worker runs it holds the embedded database,
so the query goes to the worker's ``/sql`` page on its own address, with the token the worker
wrote for its user (:mod:`streams.runtime.sqlpage`); otherwise this process opens the
database itself. A ClickHouse server is always queried directly. Either way the query runs
in a read-only session with the same checks and limits (:mod:`streams.storage.sqlsession`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from schemas.trace import UNPRINTABLE
from streams.errors import ClickHouseUnavailableError
from streams.runtime import sqlpage
from streams.settings import Settings
from streams.storage import clickhouse, sqlguard, sqlsession

Rows = list[Sequence[Any]]
MAX_CELL_CHARS = 60
# Longer than a query may run on the worker, so its answer, even a timeout, arrives.
WORKER_TIMEOUT_S = 2.0 * sqlsession.LIMITS.max_execution_s


def run(settings: Settings, query: str, output_format: str) -> int:
    columns, rows = fetch(settings, query)
    print(render(columns, rows, output_format))
    return 0


def fetch(settings: Settings, query: str) -> tuple[list[str], Rows]:
    # Before the worker is asked: a query too long to run is also too long to send.
    sqlguard.check_length(query, sqlsession.LIMITS.max_query_chars)
    owner_url = clickhouse.embedded_owner_url(settings) if settings.is_embedded_clickhouse else None
    if owner_url is not None:
        return _fetch_from_worker(owner_url, sqlpage.read_token(settings), query)
    session = sqlsession.connect(settings)
    try:
        return session.run(query)
    finally:
        session.close()


def worker_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2.0) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _fetch_from_worker(url: str, token: str, query: str) -> tuple[list[str], Rows]:
    request = urllib.request.Request(
        f"{url}{sqlpage.PATH}",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WORKER_TIMEOUT_S) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise sqlsession.QueryFailedError(_error_of(exc)) from None
    except (OSError, ValueError) as exc:
        raise ClickHouseUnavailableError(
            f"the worker at {url} holds the embedded database but did not answer: {exc}"
        ) from None
    return list(body["columns"]), list(body["rows"])


def _error_of(reply: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(reply.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"the worker answered {reply.code} {reply.reason}"


def render(columns: Sequence[str], rows: Rows, output_format: str) -> str:
    if output_format == "csv":
        return render_csv(columns, rows)
    if output_format == "json":
        return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str)
    return render_table(columns, rows)


def render_csv(columns: Sequence[str], rows: Rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_cell(value) for value in row] for row in rows])
    return out.getvalue().rstrip("\n")


def render_table(columns: Sequence[str], rows: Rows) -> str:
    """Columns aligned for a terminal: numbers right, text left, long cells shortened, and
    control characters shown as escapes (a stored ``\x1b[2J`` must not clear the screen)."""
    columns = [_visible(name) for name in columns]
    cells = [[_short(_visible(_cell(value))) for value in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) for row in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines = [line(list(columns)), "  ".join("-" * w for w in widths)]
    lines.extend(line(row) for row in cells)
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


_UNPRINTABLE = re.compile(f"[{UNPRINTABLE}]")


def _visible(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _short(text: str) -> str:
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"
