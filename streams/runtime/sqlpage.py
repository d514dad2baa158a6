"""The worker's ``/sql`` page: ``coalmine sql`` while the worker holds the embedded database.

chDB lets one process hold a data folder, so while a worker runs, queries go through it. The
page answers only ``coalmine sql``: the request must name the worker's own address in
``Host`` (a page that rebinds its DNS name to 127.0.0.1 sends its own name), carry no foreign
``Origin``, and present the token the worker wrote at start to a file only its user can read
(:func:`issue_token`). Queries run in a :class:`~streams.storage.sqlsession.QuerySession` of their
own, on a thread of their own, one at a time; the ingestion's session and thread never see
them. Every answer is JSON, errors included (``{"error": "..."}``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.errors import CoalmineError
from streams.httpguard import bearer_matches, host_allowed, issue_token_file, read_token_file
from streams.runtime.queryrunner import QueryBusyError, QueryRunner, close_on_shutdown
from streams.settings import Settings
from streams.storage import sqlsession
from streams.storage.sqlguard import QueryRefusedError

log = logging.getLogger(__name__)

PATH = "/sql"
MAX_BODY_BYTES = 12 * sqlsession.LIMITS.max_query_chars + 1024
"""A JSON body holding the longest query allowed with every character escaped: up to 12
bytes each (a surrogate pair, ``\\ud83d\\ude00``)."""


# --- the token -----------------------------------------------------------------------------


def token_file(settings: Settings) -> Path:
    """Next to the chDB folder and its owner file, under ``COALMINE_HOME``."""
    return settings.chdb_path.with_name(settings.chdb_path.name + ".sql-token")


def issue_token(settings: Settings) -> str:
    """A new token, written to :func:`token_file` readable by this user only (0600)."""
    return issue_token_file(token_file(settings))


def read_token(settings: Settings) -> str:
    return read_token_file(token_file(settings), "`coalmine sql`")


# --- who may ask ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str


def refusal(headers: Mapping[str, str], token: str, bind_host: str, port: int) -> Refusal | None:
    """Why a request's headers are refused, or ``None``. Checked before its body is read."""
    host = headers.get("Host", "")
    if not host_allowed(host, bind_host, port):
        return Refusal(403, f"Host {host!r} is not this worker's address")
    origin = headers.get("Origin")
    if origin is not None and origin != f"http://{host}":
        return Refusal(403, f"requests from {origin} are not allowed")
    if not bearer_matches(headers.get("Authorization", ""), token):
        return Refusal(401, "a valid token is required (`coalmine sql` sends it)")
    if headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
        return Refusal(415, "the body must be JSON (Content-Type: application/json)")
    length = headers.get("Content-Length")
    if length is None or not length.isdigit():
        return Refusal(411, "Content-Length is required")
    if int(length) > MAX_BODY_BYTES:
        return Refusal(413, f"the body is larger than {MAX_BODY_BYTES:,} bytes")
    return None


def query_of(body: bytes) -> str:
    """The query of a ``{"query": "..."}`` body; :class:`ValueError` saying what is wrong."""
    try:
        document = json.loads(body)
    except ValueError:
        raise ValueError('the body is not JSON; send {"query": "SELECT ..."}') from None
    query = document.get("query") if isinstance(document, dict) else None
    if not isinstance(query, str):
        raise ValueError('the body must be {"query": "SELECT ..."}')
    return query


# --- running queries -----------------------------------------------------------------------


def install(app: faust.App, settings: Settings) -> None:
    """Add the ``/sql`` page to ``app`` when the database is embedded (a server is queried
    directly by ``coalmine sql``), with a new token."""
    if not settings.is_embedded_clickhouse:
        return
    token = issue_token(settings)
    runner = QueryRunner(
        lambda: sqlsession.connect(settings),
        name="sql",
        busy="another query is running on this worker; try again when it has finished "
        f"(queries stop after {sqlsession.LIMITS.max_execution_s} s)",
    )

    @app.page(PATH)
    class Sql(View):
        async def post(self, request: Request) -> Response:
            try:
                status, document = await answer(request)
            except Exception:
                log.exception("the %s page failed", PATH)
                status, document = 500, {"error": "internal error (see the worker's log)"}
            payload = json.dumps(document, default=str).encode()
            return self.bytes(payload, content_type="application/json", status=status)

        async def get(self, request: Request) -> Response:
            return self.json({"error": f'POST {{"query": "SELECT ..."}} to {PATH}'}, status=405)

    async def answer(request: Request) -> tuple[int, dict[str, Any]]:
        refused = refusal(request.headers, token, settings.worker_host, settings.worker_port)
        if refused is not None:
            return refused.status, {"error": refused.error}
        try:
            query = query_of(await request.read())
        except ValueError as exc:
            return 400, {"error": str(exc)}
        try:
            columns, rows = await runner.call(lambda session: session.run(query))
        except QueryBusyError as exc:
            return 429, {"error": str(exc)}
        except (QueryRefusedError, sqlsession.QueryFailedError) as exc:
            return 400, {"error": str(exc)}
        except CoalmineError as exc:
            return 503, {"error": str(exc)}
        return 200, {"columns": columns, "rows": rows}

    close_on_shutdown(app, runner, "/sql")
