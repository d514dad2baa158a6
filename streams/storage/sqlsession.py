"""The session ``coalmine sql`` queries run in: its own client, read-only, with fixed limits.

A query goes through three steps on this session, each by ClickHouse itself:

1. ``formatQuerySingleLine`` receives the query as a parameter (never executed) and refuses
   more than one statement; its output is the text checked and run afterwards;
2. ``EXPLAIN AST`` of that text lists what the query uses, for
   :func:`streams.storage.sqlguard.check_ast`;
3. the text runs, its rows coming back as JSON.

The length is checked before any of them. The client's ``raw_query`` is used throughout:
clickhouse-connect's ``query`` searches the text with ``\\s+LIMIT($|\\s)``, which takes
quadratic time in a run of blanks (2 s for 20,000, minutes for 300,000).

The session itself is read-only (``readonly = 1`` set last, after the limits, so nothing a
query says can change them) and is never the ingestion's: a query cannot change the settings
of the worker's inserts. chDB has no users or grants, so there the allowlist is what keeps
queries from files, URLs and the settings; on a server, give ``coalmine sql`` a user that can
only read (README, Querying) and the server enforces it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from streams.errors import ClickHouseUnavailableError, CoalmineError
from streams.failures import clickhouse_message
from streams.settings import Settings, mask_url
from streams.storage import sqlguard
from streams.storage.clickhouse import drain_after_failure

Rows = list[Sequence[Any]]


@dataclass(frozen=True)
class QueryLimits:
    max_query_chars: int = 20_000
    max_execution_s: int = 30
    max_memory_bytes: int = 512 * 1024 * 1024
    max_result_rows: int = 100_000
    max_result_bytes: int = 32 * 1024 * 1024
    max_threads: int = 1
    """One core: the worker's ingestion keeps the others."""


LIMITS = QueryLimits()


class QueryFailedError(CoalmineError):
    """ClickHouse refused or stopped a query (syntax, unknown table, a limit reached...)."""


def session_settings(limits: QueryLimits, server_readonly: int) -> dict[str, int]:
    """The settings of the query session, in the order they must be applied.

    ``server_readonly`` is the ``readonly`` the session starts with: 0 for chDB and for a
    server user that may write (the session then makes itself read-only, last, since a
    read-only session can change no setting); 2 for a read-only server user that may still
    set limits. A user with ``readonly = 1`` cannot be given the limits, so it is refused.
    """
    if server_readonly == 1:
        raise ClickHouseUnavailableError(
            "the ClickHouse user of `coalmine sql` has readonly = 1, which also forbids "
            "setting the query limits; give it readonly = 2 (README, Querying)"
        )
    settings = {
        "max_execution_time": limits.max_execution_s,
        "max_memory_usage": limits.max_memory_bytes,
        "max_result_rows": limits.max_result_rows,
        "max_result_bytes": limits.max_result_bytes,
        "max_threads": limits.max_threads,
        "output_format_json_quote_64bit_integers": 0,
    }
    if server_readonly == 0:
        settings["readonly"] = 1
    return settings


class QuerySession:
    """Runs one user query at a time on its own read-only client. Not thread-safe."""

    def __init__(
        self,
        client: Client,
        limits: QueryLimits = LIMITS,
        allowlist: sqlguard.Allowlist | None = None,
    ) -> None:
        """``client`` must already carry :func:`session_settings` (see :func:`connect`)."""
        self._client = client
        self._limits = limits
        self._allowlist = allowlist or sqlguard.default_allowlist()

    def run(self, query: str) -> tuple[list[str], Rows]:
        """Columns and rows of ``query``; :class:`~streams.storage.sqlguard.QueryRefusedError`
        when a rule of :mod:`streams.storage.sqlguard` refuses it, :class:`QueryFailedError`
        when ClickHouse does."""
        sqlguard.check_length(query, self._limits.max_query_chars)
        formatted = json.loads(
            self._raw(
                "SELECT formatQuerySingleLine({query:String})",
                {"query": query},
                "JSONCompactEachRow",
            )
        )[0]
        sqlguard.check_ast(self._raw(f"EXPLAIN AST {formatted}").decode(), self._allowlist)
        return self._rows(formatted)

    def run_parameterised(
        self, query: str, parameters: Mapping[str, str | int | float]
    ) -> tuple[list[str], Rows]:
        """Columns and rows of a query this program wrote, with the values a request gave
        bound as ClickHouse query parameters (``{name:Type}`` in ``query``), never spliced
        into its text. No allowlist check (the text is ours); the session's read-only
        limits hold. :class:`QueryFailedError` when ClickHouse refuses it."""
        return self._rows(query, parameters)

    def _rows(
        self, query: str, parameters: Mapping[str, str | int | float] | None = None
    ) -> tuple[list[str], Rows]:
        lines = self._raw(query, parameters, "JSONCompactEachRowWithNames").splitlines()
        if not lines:
            return [], []
        columns, *rows = (json.loads(line) for line in lines)
        return [str(c) for c in columns], rows

    def close(self) -> None:
        self._client.close()

    def _raw(
        self,
        sql: str,
        parameters: Mapping[str, str | int | float] | None = None,
        fmt: str | None = None,
    ) -> bytes:
        try:
            return self._client.raw_query(
                sql, parameters=dict(parameters) if parameters else None, fmt=fmt
            )
        except ClickHouseError as exc:
            drain_after_failure(self._client)
            raise QueryFailedError(clickhouse_message(str(exc))) from None


def connect(settings: Settings, limits: QueryLimits = LIMITS) -> QuerySession:
    """A new query session on the configured ClickHouse, separate from any other client.

    Inside the worker this is a second handle on the worker's own chDB engine, which chDB
    allows (one data folder per process, any number of sessions on it).
    """
    try:
        if settings.is_embedded_clickhouse:
            client = clickhouse_connect.get_client(dsn=settings.clickhouse_url)
        else:
            client = clickhouse_connect.get_client(dsn=settings.clickhouse_url, database="default")
    except Exception as exc:
        raise ClickHouseUnavailableError(
            f"cannot open ClickHouse at {mask_url(settings.clickhouse_url)} for queries: "
            f"{clickhouse_message(str(exc))}"
        ) from exc
    try:
        readonly = client.server_settings.get("readonly")
        for name, value in session_settings(limits, int(readonly.value if readonly else 0)).items():
            client.set_client_setting(name, value)
    except BaseException:
        client.close()
        raise
    return QuerySession(client, limits)
