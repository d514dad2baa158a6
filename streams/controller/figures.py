"""Where the evaluation gate's figures come from: a version's offline evaluation spans in
ClickHouse, read through the same read-only path as ``coalmine sql`` (the worker's SQL page
while a worker holds the embedded chDB, a direct session on a server).

The state machine sees only :class:`~streams.controller.inputs.EvalFigures`; the controller
asks an :class:`EvalFigureSource` for them, so tests and other stores can stand in.
"""

from __future__ import annotations

from typing import Protocol

from streams import sqlcli
from streams.controller.inputs import EvalFigures
from streams.settings import Settings

EVAL_FIGURES_SQL = """
SELECT count() AS cases, avg(quality_score) AS quality, countIf(status = 'error') AS errors
FROM coalmine.spans
WHERE agent = {agent} AND version = {version} AND environment = 'eval'
  AND kind IN ('eval', 'request')
"""
"""The gate's one query: eval spans of a version (``avg`` skips spans without a score)."""


class EvalFigureSource(Protocol):
    def figures(self, agent: str, version: str) -> EvalFigures:
        """The version's evaluation figures now; raises
        :class:`~streams.errors.CoalmineError` when the store cannot answer."""
        ...


def sql_string(text: str) -> str:
    """``text`` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ClickHouseEvalFigures:
    """Figures from ``coalmine.spans`` through :func:`streams.sqlcli.fetch`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def figures(self, agent: str, version: str) -> EvalFigures:
        query = EVAL_FIGURES_SQL.format(agent=sql_string(agent), version=sql_string(version))
        _, rows = sqlcli.fetch(self._settings, query)
        cases, quality, errors = rows[0]
        cases = int(cases)
        return EvalFigures(
            cases=cases,
            quality=None if quality is None or cases == 0 else float(quality),
            error_rate=int(errors) / cases if cases else None,
        )
