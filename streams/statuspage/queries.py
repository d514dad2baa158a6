"""The status page's data: one function per JSON endpoint (shapes in
:mod:`streams.statuspage`), each running its SQL through ``fetch`` and shaping the rows.

Request values reach ClickHouse only as query parameters (``{agent:String}``), never in the
text. ``fetch`` is :meth:`~streams.storage.sqlsession.QuerySession.run_parameterised` with
its rows as dicts; everything else here is pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from schemas.judgement import METRIC_WORDS, RATE_METRICS, Metric
from streams.statuspage.requests import AgentQuery

Row = dict[str, Any]
Fetch = Callable[[str, Mapping[str, str | int]], list[Row]]

MAX_AGENTS: Final = 1000
MAX_ROLLOUTS: Final = 20
MAX_JUDGEMENTS: Final = 2000
MAX_TIMELINE_ROWS: Final = 500
WORSE_WHEN_LOWER: Final = frozenset({Metric.QUALITY_MEAN})
"""Metrics whose canary is worse when its value is lower; for every other, higher is worse."""
_KNOWN_METRICS: Final = frozenset(str(m) for m in Metric)

LATEST_DEPLOYMENTS = f"""
SELECT agent, generation, to_phase AS phase, stable_version, canary_version, canary_weight,
       step_index, rollout_id, time AS updated_at, cause, plan
FROM coalmine.deployment_events FINAL
WHERE {{agent:String}} = '' OR agent = {{agent:String}}
ORDER BY agent, generation DESC
LIMIT 1 BY agent
LIMIT {MAX_AGENTS}
"""

LATEST_VERDICTS = """
SELECT j.agent AS agent, argMax(j.verdict, (j.time, j.kafka_offset)) AS verdict,
       max(j.time) AS verdict_at
FROM coalmine.judgements AS j
INNER JOIN
(
    SELECT agent, argMax(rollout_id, generation) AS rollout_id
    FROM coalmine.deployment_events
    GROUP BY agent
) AS d ON j.agent = d.agent AND j.rollout_id = d.rollout_id
GROUP BY j.agent
"""

AGENTS_WITH_TRAFFIC = f"""
SELECT DISTINCT agent FROM coalmine.version_stats_1m
WHERE minute >= now() - INTERVAL 1 DAY
LIMIT {MAX_AGENTS}
"""

SERIES = """
SELECT version,
       toUnixTimestamp(minute) AS minute,
       sum(requests) AS requests,
       sum(errors) AS errors,
       sum(cost_sum) AS cost_usd,
       sum(quality_count) AS quality_count,
       sum(quality_sum) AS quality_sum,
       coalmine_latency_quantile_ms(sumForEachMerge(latency_buckets), 0.95) AS latency_p95_ms
FROM coalmine.version_stats_1m
WHERE agent = {agent:String}
  AND minute >= toStartOfMinute(now()) - toIntervalMinute({minutes:UInt32} - 1)
GROUP BY version, minute
ORDER BY minute, version
"""

ROLLOUTS = f"""
SELECT rollout_id,
       argMin(stable_version, generation) AS stable_version,
       argMaxIf(canary_version, generation, canary_version != '') AS canary_version,
       min(time) AS started_at,
       max(time) AS updated_at,
       argMax(to_phase, generation) AS phase,
       argMax(cause, generation) AS cause
FROM coalmine.deployment_events FINAL
WHERE agent = {{agent:String}} AND rollout_id != ''
GROUP BY rollout_id
ORDER BY updated_at DESC
LIMIT {MAX_ROLLOUTS}
"""

JUDGEMENTS = f"""
SELECT toUnixTimestamp64Milli(time) / 1000 AS t, time, generation, verdict, windows_compared,
       explanation, stable_version, canary_version,
       metrics.metric AS metric, metrics.effect AS effect, metrics.cs_lower AS cs_lower,
       metrics.cs_upper AS cs_upper, metrics.e_value AS e_value,
       metrics.threshold AS threshold, metrics.tolerance AS tolerance,
       metrics.verdict AS metric_verdict, metrics.explanation AS metric_explanation
FROM
(
    SELECT * FROM coalmine.judgements FINAL
    WHERE agent = {{agent:String}} AND rollout_id = {{rollout_id:String}}
    ORDER BY time DESC, kafka_offset DESC
    LIMIT {MAX_JUDGEMENTS}
)
ORDER BY time, kafka_offset
"""

TIMELINE = f"""
SELECT time, source, event, version, canary_weight, detail, ref
FROM coalmine.deployment_timeline(agent = {{agent:String}}, rollout_id = {{rollout_id:String}})
LIMIT {MAX_TIMELINE_ROWS}
"""

ALERTS = """
SELECT time, kind, severity, version, metric, rollout_id, message
FROM coalmine.alerts FINAL
WHERE agent = {agent:String}
ORDER BY time DESC
LIMIT {limit:UInt32}
"""


# --- the endpoints -------------------------------------------------------------------------


def agents(fetch: Fetch, now_iso: str) -> dict[str, Any]:
    deployed = fetch(LATEST_DEPLOYMENTS, {"agent": ""})
    verdicts = {row["agent"]: row for row in fetch(LATEST_VERDICTS, {})}
    with_traffic = [row["agent"] for row in fetch(AGENTS_WITH_TRAFFIC, {})]
    return {"now": now_iso, "agents": agent_list(deployed, verdicts, with_traffic)}


def series(fetch: Fetch, query: AgentQuery) -> dict[str, Any]:
    deployment = _deployment(fetch, query.agent)
    rows = fetch(SERIES, {"agent": query.agent, "minutes": query.minutes})
    return {"agent": query.agent, "minutes": query.minutes, **per_minute(rows, deployment)}


def rollouts(fetch: Fetch, query: AgentQuery) -> dict[str, Any]:
    rows = fetch(ROLLOUTS, {"agent": query.agent})
    return {"agent": query.agent, "rollouts": [rollout_entry(row) for row in rows]}


def evidence(fetch: Fetch, query: AgentQuery) -> dict[str, Any]:
    rollout_id = query.rollout_id or _latest_rollout(fetch, query.agent)
    rows = fetch(JUDGEMENTS, {"agent": query.agent, "rollout_id": rollout_id}) if rollout_id else []
    return {"agent": query.agent, "rollout_id": rollout_id, **judge_evidence(rows)}


def timeline(fetch: Fetch, query: AgentQuery) -> dict[str, Any]:
    rollout_id = query.rollout_id or _latest_rollout(fetch, query.agent)
    rows = fetch(TIMELINE, {"agent": query.agent, "rollout_id": rollout_id}) if rollout_id else []
    return {"rollout_id": rollout_id, "rows": [_with_iso_time(row) for row in rows]}


def alerts(fetch: Fetch, query: AgentQuery) -> dict[str, Any]:
    rows = fetch(ALERTS, {"agent": query.agent, "limit": query.limit})
    return {"alerts": [_with_iso_time(row) for row in rows]}


def _deployment(fetch: Fetch, agent: str) -> Row | None:
    rows = fetch(LATEST_DEPLOYMENTS, {"agent": agent})
    return rows[0] if rows else None


def _latest_rollout(fetch: Fetch, agent: str) -> str | None:
    rows = fetch(ROLLOUTS, {"agent": agent})
    return str(rows[0]["rollout_id"]) if rows else None


# --- shaping rows (pure) -------------------------------------------------------------------


def iso(clickhouse_time: str) -> str:
    """``2026-12-02 16:52:40.123`` (a UTC DateTime64 as ClickHouse writes it in JSON) as ISO
    8601: ``2026-12-02T16:52:40.123Z``."""
    return clickhouse_time.replace(" ", "T") + "Z"


def _with_iso_time(row: Row) -> Row:
    return {**row, "time": iso(row["time"])}


def _name(text: str) -> str | None:
    """Version columns hold '' for "none"."""
    return text or None


def agent_list(
    deployed: Iterable[Row], verdicts: Mapping[str, Row], with_traffic: Iterable[str]
) -> list[Row]:
    """One entry per deployed agent (its latest deployment record and the latest verdict of
    its rollout), then the agents with traffic but no deployment, by name."""
    entries = {}
    for row in deployed:
        verdict = verdicts.get(row["agent"])
        plan = json.loads(row["plan"]) if row["plan"] else None
        entries[row["agent"]] = {
            "agent": row["agent"],
            "phase": row["phase"],
            "stable_version": _name(row["stable_version"]),
            "canary_version": _name(row["canary_version"]),
            "canary_weight": row["canary_weight"],
            "step_index": row["step_index"],
            "steps": len(plan["steps"]) if plan else None,
            "rollout_id": _name(row["rollout_id"]),
            "generation": row["generation"],
            "updated_at": iso(row["updated_at"]),
            "verdict": verdict["verdict"] if verdict else None,
            "verdict_at": iso(verdict["verdict_at"]) if verdict else None,
        }
    for agent in with_traffic:
        entries.setdefault(agent, {"agent": agent, **dict.fromkeys(_DEPLOYMENT_FIELDS)})
    return [entries[name] for name in sorted(entries)]


_DEPLOYMENT_FIELDS = (
    "phase",
    "stable_version",
    "canary_version",
    "canary_weight",
    "step_index",
    "steps",
    "rollout_id",
    "generation",
    "updated_at",
    "verdict",
    "verdict_at",
)

SERIES_FIGURES: Final = (
    "requests",
    "error_rate",
    "latency_p95_ms",
    "cost_per_request_usd",
    "quality_mean",
)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def minute_figures(row: Row) -> dict[str, float | int | None]:
    """One version's figures for one minute, as ``coalmine.version_summary`` computes them."""
    requests = int(row["requests"])
    return {
        "requests": requests,
        "error_rate": _ratio(row["errors"], requests),
        "latency_p95_ms": row["latency_p95_ms"],
        "cost_per_request_usd": _ratio(row["cost_usd"], requests),
        "quality_mean": _ratio(row["quality_sum"], row["quality_count"]),
    }


def per_minute(rows: Sequence[Row], deployment: Row | None) -> dict[str, Any]:
    """Every version's figures on one minute axis (``null`` where it has no row), stable and
    canary first."""
    stable = _name(deployment["stable_version"]) if deployment else None
    canary = _name(deployment["canary_version"]) if deployment else None
    minutes = sorted({int(row["minute"]) for row in rows})
    position = {minute: i for i, minute in enumerate(minutes)}
    by_version: dict[str, dict[str, list[Any]]] = {}
    for row in rows:
        figures = by_version.setdefault(
            row["version"], {name: [None] * len(minutes) for name in SERIES_FIGURES}
        )
        for name, value in minute_figures(row).items():
            figures[name][position[int(row["minute"])]] = value

    def role(version: str) -> str:
        return "stable" if version == stable else "canary" if version == canary else "other"

    order = {"stable": 0, "canary": 1, "other": 2}
    return {
        "stable_version": stable,
        "canary_version": canary,
        "minute": minutes,
        "versions": [
            {"version": version, "role": role(version), **figures}
            for version, figures in sorted(
                by_version.items(), key=lambda item: (order[role(item[0])], item[0])
            )
        ],
    }


def rollout_entry(row: Row) -> Row:
    return {
        "rollout_id": row["rollout_id"],
        "stable_version": _name(row["stable_version"]),
        "canary_version": _name(row["canary_version"]),
        "started_at": iso(row["started_at"]),
        "updated_at": iso(row["updated_at"]),
        "phase": row["phase"],
        "cause": row["cause"],
    }


def pass_bound(metric: Metric, tolerance: float | None) -> float | None:
    """The value the confidence sequence must stay on the good side of for PASS: the
    tolerance itself, or its negative for a metric that is worse when lower."""
    if tolerance is None:
        return None
    return -tolerance if metric in WORSE_WHEN_LOWER else tolerance


def judge_evidence(rows: Sequence[Row]) -> dict[str, Any]:
    """Judgements (one row each, with parallel arrays of metric evidence, oldest first) as a
    verdict strip and one series per metric."""
    verdicts = [
        {
            "time": iso(row["time"]),
            "generation": row["generation"],
            "verdict": row["verdict"],
            "windows_compared": row["windows_compared"],
            "explanation": row["explanation"],
        }
        for row in rows
    ]
    metrics: dict[str, Row] = {}
    for row in rows:
        for i, name in enumerate(row["metric"]):
            if name not in _KNOWN_METRICS:
                continue  # a metric a newer detector judges; this page cannot label it
            metric = Metric(name)
            series = metrics.setdefault(name, _metric_series(metric))
            series["t"].append(row["t"])
            for column in ("effect", "cs_lower", "cs_upper", "e_value", "threshold"):
                series[column].append(row[column][i])
            series["pass_bound"].append(pass_bound(metric, row["tolerance"][i]))
            series["verdict"].append(row["metric_verdict"][i])
            series["explanation"] = row["metric_explanation"][i]
    last = rows[-1] if rows else None
    return {
        "stable_version": last["stable_version"] if last else None,
        "canary_version": last["canary_version"] if last else None,
        "verdicts": verdicts,
        "metrics": [metrics[m] for m in Metric if m in metrics],
    }


def _metric_series(metric: Metric) -> Row:
    rate = metric in RATE_METRICS
    return {
        "metric": str(metric),
        "label": METRIC_WORDS[metric],
        "kind": "rate" if rate else "mean",
        "no_effect": 1.0 if rate else 0.0,
        "worse": "lower" if metric in WORSE_WHEN_LOWER else "higher",
        **{
            column: []
            for column in (
                "t",
                "effect",
                "cs_lower",
                "cs_upper",
                "pass_bound",
                "e_value",
                "threshold",
                "verdict",
            )
        },
        "explanation": "",
    }
