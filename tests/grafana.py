"""What Grafana and the ClickHouse data source plugin send to ClickHouse for a query of
grafana/dashboards/coalmine.json: the dashboard's queries found, then expanded in the plugin's
two steps (pure; no Grafana here, the tests run the result on chDB).

1. In the browser, the plugin's ``applyTemplateVariables`` runs Grafana's template service on
   ``rawSql`` (https://github.com/grafana/clickhouse-datasource/blob/v4.20.0/src/data/CHDatasource.ts):
   ``${name}`` / ``$name`` become the variable's value as it is (the plugin's format function
   quotes only multi-value lists, which this dashboard has none of), ``${name:percentencode}``
   Grafana's RFC 3986 encoding (``encodeURIComponentStrict``: every byte but ``A-Za-z0-9-_.~``
   as ``%XX`` of its UTF-8). A name that is no variable is left as it is, so ``$__timeFilter``
   passes through to step 2.
2. In the plugin's backend, its macros
   (https://github.com/grafana/clickhouse-datasource/blob/v4.20.0/pkg/macros/macros.go), with
   the query's time range and interval: ``$__timeFilter(c)``, ``$__fromTime``, ``$__toTime``,
   ``$__timeInterval(c)``, arguments split at top-level commas and trimmed, inner macros
   first. Only these are modelled; any other ``$__`` macro raises, so the dashboard cannot use
   one the tests would not expand as the plugin does.

Not modelled, and so kept out of the dashboard (a unit test checks): SQL comments (the plugin's
macro engine, macropro, strips them first) and multi-value or "All" variables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

DATASOURCE_TYPE = "grafana-clickhouse-datasource"

# The variable syntax Grafana's template service recognises: ${name}, ${name:format} (a
# ${name.field} path is ignored here), [[name]], [[name:format]] and $name (word characters).
_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?:\.[^:^}]+)?(?::(?P<braced_format>[^}]+))?\}"
    r"|\[\[(?P<bracketed>\w+?)(?::(?P<bracketed_format>\w+))?\]\]"
    r"|\$(?P<plain>\w+)"
)
_MACRO = re.compile(r"\$__(\w+)")


@dataclass(frozen=True)
class DashboardQuery:
    """One query of the dashboard: where it is (a panel's title and refId, or a variable)."""

    where: str
    datasource: Mapping[str, Any]
    raw_sql: str
    format: int | None


@dataclass(frozen=True)
class QueryRange:
    """What Grafana sends with a query: the dashboard's time range and the panel's interval."""

    time_from: datetime
    time_to: datetime
    interval_s: float


def dashboard_queries(dashboard: Mapping[str, Any]) -> Iterator[DashboardQuery]:
    """Every query of the dashboard: its variables' and each panel's targets (rows included)."""
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            raw = query if isinstance(query, str) else query["rawSql"]
            yield DashboardQuery(f"variable {variable['name']}", variable["datasource"], raw, None)
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield DashboardQuery(
                f"panel {panel['title']!r} {target['refId']}",
                target.get("datasource", panel.get("datasource")),
                target["rawSql"],
                target.get("format"),
            )


def _panels(panels: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def apply_variables(sql: str, variables: Mapping[str, str]) -> str:
    """Step 1: Grafana's template service with the plugin's format function."""

    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["bracketed"] or match["plain"]
        fmt = match["braced_format"] or match["bracketed_format"]
        if name not in variables:
            return match.group(0)
        value = variables[name]
        if fmt is None or fmt == "raw":
            return value
        if fmt == "percentencode":
            return quote(value, safe="")
        raise ValueError(f"variable format {fmt!r} is not modelled")

    return _VARIABLE.sub(replace, sql)


def expand_macros(sql: str, query_range: QueryRange) -> str:
    """Step 2: the plugin's macros, as macros.go writes them."""
    out: list[str] = []
    position = 0
    for match in _MACRO.finditer(sql):
        if match.start() < position:
            continue  # inside the arguments of a macro already expanded
        out.append(sql[position : match.start()])
        name = match.group(1)
        args: list[str] = []
        end = match.end()
        if end < len(sql) and sql[end] == "(":
            inner, end = _arguments(sql, end)
            args = [expand_macros(arg, query_range).strip() for arg in _split(inner)]
        out.append(_macro(name, args, query_range))
        position = end
    out.append(sql[position:])
    return "".join(out)


def render(sql: str, variables: Mapping[str, str], query_range: QueryRange) -> str:
    """What reaches ClickHouse for ``sql``."""
    return expand_macros(apply_variables(sql, variables), query_range)


def _macro(name: str, args: list[str], query_range: QueryRange) -> str:
    start = f"toDateTime({_unix(query_range.time_from)})"
    end = f"toDateTime({_unix(query_range.time_to)})"
    if name == "fromTime":
        return start
    if name == "toTime":
        return end
    if name == "timeFilter":
        (column,) = _exactly_one(name, args)
        return f"{column} >= {start} AND {column} <= {end}"
    if name == "timeInterval":
        (column,) = _exactly_one(name, args)
        seconds = int(max(query_range.interval_s, 1.0))
        return f"toStartOfInterval(toDateTime({column}), INTERVAL {seconds} second)"
    raise ValueError(f"macro $__{name} is not modelled")


def _exactly_one(name: str, args: list[str]) -> list[str]:
    if len(args) != 1:
        raise ValueError(f"$__{name} expected 1 argument(s), received {len(args)}")
    return args


def _unix(at: datetime) -> int:
    """Go's ``time.Unix()``: whole seconds, rounded down."""
    return math.floor(at.timestamp())


def _arguments(sql: str, open_at: int) -> tuple[str, int]:
    """The text between the parenthesis at ``open_at`` and its match; the index after it."""
    depth = 0
    for index in range(open_at, len(sql)):
        if sql[index] == "(":
            depth += 1
        elif sql[index] == ")":
            depth -= 1
            if depth == 0:
                return sql[open_at + 1 : index], index + 1
    raise ValueError(f"unbalanced parentheses after position {open_at}")


def _split(inner: str) -> list[str]:
    """Arguments at top-level commas."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(inner):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(inner[start:index])
            start = index + 1
    parts.append(inner[start:])
    return parts
