"""Every query of grafana/dashboards/coalmine.json, expanded as Grafana and the ClickHouse plugin
expand it (tests/grafana.py), run on real chDB with the migrations applied, for every agent and
rollout its variables offer; each answers what was written: version_stats rows of two versions
(and of an agent whose name holds a quote and a backslash), deployments of two rollouts, their
judgements, alerts and a rollback request, and rows outside the time range that must not show.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from clickhouse_connect.driver.client import Client
from pydantic import BaseModel

from schemas.alert import Alert, Severity
from schemas.deployment import DeploymentChange, DeploymentState, Phase
from schemas.judgement import Judgement, Verdict
from schemas.window_stats import quantile_from_buckets
from streams.storage.control import DeploymentEventWriter, Positioned
from streams.storage.detector_events import (
    ALERTS_TABLE,
    JUDGEMENTS_TABLE,
    ROLLBACKS_TABLE,
    DetectorEventWriter,
)
from tests.grafana import QueryRange, dashboard_queries, render
from tests.integration.test_sql_views import (
    Part,
    Row,
    client,
    insert,
    make_part,
    merged_buckets,
    naive,
    query,
    total,
)
from tests.unit.alerts import examples
from tests.unit.storage.test_control_rows import canary_state

pytestmark = pytest.mark.integration
__all__ = ["client"]  # the fixture: a fresh migrated chDB for this module

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "dashboards" / "coalmine.json"
AGENT = "support-bot"
HOSTILE = "it's\\ bot"  # a quote and a backslash: Identifier allows both
E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True)
class Written:
    """What the module stored, and the dashboard's time range around it."""

    query_range: QueryRange
    parts: dict[str, list[Part]]  # per agent, inside the range
    states: list[DeploymentState]
    judgements: list[Judgement]
    alerts: list[Alert]  # inside the range


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def written(client: Client) -> Written:
    now = datetime.now(UTC)
    base = now.replace(second=0, microsecond=0) - timedelta(hours=1)
    query_range = QueryRange(base - timedelta(minutes=30), now, interval_s=60.0)
    outside = base - timedelta(minutes=40)  # before the range: nothing of it may show

    def moved(event: E, *times: str) -> E:
        """An example event's ``times`` moved from around DEPLOYED_AT to around ``base``."""
        shift = base - examples.DEPLOYED_AT
        return event.model_copy(update={name: getattr(event, name) + shift for name in times})

    rng = np.random.default_rng(20261202)
    offsets = iter(range(0, 10**9, 1000))

    def parts(agent: str, version: str, minutes: Sequence[int], start: datetime) -> list[Part]:
        return [
            make_part(
                rng,
                agent,
                version,
                start + timedelta(minutes=minute, seconds=seconds),
                partition=partition,
                offset_from=next(offsets),
                requests=1 + int(rng.poisson(6)),
                slowdown=1.5 if version == "v2" else 1.0,
            )
            for minute in minutes
            for seconds in (0, 35)
            for partition in (0, 1)
        ]

    inside = {
        AGENT: parts(AGENT, "v1", range(10), base) + parts(AGENT, "v2", range(3, 10), base),
        HOSTILE: parts(HOSTILE, "v1", range(3), base),
    }
    insert(client, [*inside[AGENT], *inside[HOSTILE]])
    insert(client, parts(AGENT, "v1", [0], outside) + parts("old-bot", "v1", [0], outside))

    rolled_back = DeploymentChange(
        from_phase=Phase.CANARY, cause="rollback", command_id="rollback-1", issued_by="detector"
    )
    deployed = DeploymentChange(from_phase=Phase.IDLE, cause="deploy", issued_by="alice")
    first = canary_state().model_copy(
        update={"generation": 1, "rollout_id": "cmd-1", "change": deployed, "updated_at": base}
    )
    states = [
        first,
        first.model_copy(
            update={
                "generation": 2,
                "phase": Phase.ROLLED_BACK,
                "canary_weight": 0.0,
                "change": rolled_back,
                "updated_at": base + timedelta(seconds=61.5),
            }
        ),
        first.model_copy(
            update={
                "generation": 3,
                "rollout_id": "cmd-2",
                "canary_version": "v3",
                "updated_at": base + timedelta(seconds=1200),
            }
        ),
    ]
    made = [
        examples.judgement(5, Verdict.CONTINUE),
        examples.judgement(60, Verdict.ROLLBACK, 143.0),
        examples.judgement(1300, Verdict.CONTINUE, rollout_id="cmd-2"),
        examples.judgement(1400, Verdict.ALERT, 40.0, rollout_id="cmd-2"),
    ]
    judgements = [
        moved(j.model_copy(update={"canary_version": "v3"}), "time", "window_end")
        if j.rollout_id == "cmd-2"
        else moved(j, "time", "window_end")
        for j in made
    ]
    alerts = [
        moved(examples.regression_alert(60), "time"),
        moved(
            examples.regression_alert(
                1400, rollout_id="cmd-2", alert_id="alert-2", severity=Severity.WARNING
            ),
            "time",
        ),
    ]
    old_drift = examples.drift_alert().model_copy(update={"time": outside})
    DeploymentEventWriter(client).write(positioned(states), received_at=now)
    events = DetectorEventWriter(client)
    events.write(JUDGEMENTS_TABLE, positioned(judgements))
    events.write(ALERTS_TABLE, positioned([*alerts, old_drift]))
    events.write(ROLLBACKS_TABLE, positioned([moved(examples.rollback_request(61), "time")]))
    return Written(query_range, inside, states, judgements, alerts)


def positioned(values: Sequence[E]) -> list[Positioned[E]]:
    return [Positioned(value, offset) for offset, value in enumerate(values)]


def sql_of(dashboard: dict[str, Any], where: str) -> str:
    (raw,) = [q.raw_sql for q in dashboard_queries(dashboard) if q.where.startswith(where)]
    return raw


def run(
    client: Client, raw_sql: str, variables: dict[str, str], query_range: QueryRange
) -> list[Row]:
    sql = render(raw_sql, variables, query_range)
    assert "$" not in sql, sql  # a variable or macro left unexpanded
    return query(client, sql)


def options(
    client: Client, dashboard: dict[str, Any], written: Written
) -> Iterator[dict[str, str]]:
    """Every (agent, rollout) the variables offer, as Grafana fills them in: the agent list
    first, then the rollouts of the chosen agent ('' when it has none, Grafana's "None")."""
    for (agent,) in (
        r.values()
        for r in run(client, sql_of(dashboard, "variable agent"), {}, written.query_range)
    ):
        rollouts = run(
            client, sql_of(dashboard, "variable rollout_id"), {"agent": agent}, written.query_range
        )
        for rollout_id in [r["rollout_id"] for r in rollouts] or [""]:
            yield {"agent": agent, "rollout_id": rollout_id}


# --- every query runs -----------------------------------------------------------------------


def test_every_query_runs_for_every_agent_and_rollout_the_variables_offer(
    client: Client, dashboard: dict[str, Any], written: Written
) -> None:
    chosen = list(options(client, dashboard, written))
    assert chosen == [
        {"agent": HOSTILE, "rollout_id": ""},
        {"agent": AGENT, "rollout_id": "cmd-2"},  # newest first
        {"agent": AGENT, "rollout_id": "cmd-1"},
    ]  # not old-bot: its traffic is before the range
    queries = list(dashboard_queries(dashboard))
    for variables in chosen:
        for q in queries:
            rows = run(client, q.raw_sql, variables, written.query_range)
            print(q.where, variables, len(rows), "rows")


# --- what each panel answers ----------------------------------------------------------------


def test_the_agents_table_has_each_agent_s_latest_deployment_and_verdict(
    client: Client, dashboard: dict[str, Any], written: Written
) -> None:
    rows = run(client, sql_of(dashboard, "panel 'Agents'"), {}, written.query_range)

    latest = written.states[-1]
    verdict = written.judgements[-1]
    assert verdict.rollout_id == latest.rollout_id
    assert latest.plan is not None and latest.updated_at is not None
    assert rows == [
        {"agent": HOSTILE, **dict.fromkeys(list(rows[1])[1:])},  # traffic, no deployment
        {
            "agent": AGENT,
            "phase": latest.phase.value,
            "stable": latest.stable_version,
            "canary": latest.canary_version,
            "weight": latest.canary_weight,
            "step_index": latest.step_index,
            "steps": len(latest.plan.steps),
            "rollout_id": latest.rollout_id,
            "updated_at": naive(latest.updated_at),
            "verdict": verdict.verdict.value,
            "verdict_at": naive(verdict.time),
        },
    ]


def expected_series(parts: Sequence[Part], bucket_s: int) -> dict[tuple[datetime, str], Row]:
    """Per (bucket start, version): the figures of the status page, from the parts' stats."""
    groups: dict[tuple[datetime, str], list[Part]] = defaultdict(list)
    for part in parts:
        minute = part.stats.window_start.replace(second=0)
        start = datetime.fromtimestamp(math.floor(minute.timestamp() / bucket_s) * bucket_s, UTC)
        groups[(naive(start), part.stats.version)].append(part)
    return {
        key: {
            "requests": total(group, "requests"),
            "error_rate": total(group, "errors") / total(group, "requests"),
            "latency_p95_ms": quantile_from_buckets(merged_buckets(group), 0.95),
            "cost_per_request_usd": total(group, "cost_sum") / total(group, "requests"),
            "quality_mean": total(group, "quality_sum") / total(group, "quality_count")
            if total(group, "quality_count")
            else None,
        }
        for key, group in groups.items()
    }


@pytest.mark.parametrize("interval_s", [60, 300])
def test_each_series_is_what_was_written_per_version_and_interval(
    client: Client, dashboard: dict[str, Any], written: Written, interval_s: int
) -> None:
    query_range = QueryRange(written.query_range.time_from, written.query_range.time_to, interval_s)
    series = [q for q in dashboard_queries(dashboard) if q.format == 0 and "Judge" not in q.where]
    assert len(series) == 5
    for agent, parts in written.parts.items():
        want = expected_series(parts, interval_s)
        for q in series:
            rows = run(client, q.raw_sql, {"agent": agent}, query_range)
            (name,) = set(rows[0]) - {"time", "version"}
            got = {(row["time"], row["version"]): row[name] for row in rows}
            assert list(got) == sorted(want), (q.where, agent)  # ordered by time, version
            for key, value in got.items():
                assert value == pytest.approx(want[key][name], rel=1e-12), (q.where, agent, key)


def test_the_judge_panels_show_the_chosen_rollout_s_evidence(
    client: Client, dashboard: dict[str, Any], written: Written
) -> None:
    for rollout_id in ("cmd-1", "cmd-2"):
        variables = {"agent": AGENT, "rollout_id": rollout_id}
        judged = [j for j in written.judgements if j.rollout_id == rollout_id]
        effect = run(
            client, sql_of(dashboard, "panel 'Judge: effect"), variables, written.query_range
        )
        e_values = run(
            client, sql_of(dashboard, "panel 'Judge: e-value"), variables, written.query_range
        )

        evidence = [
            (naive(j.time), m) for j in judged for m in sorted(j.metrics, key=lambda m: m.metric)
        ]
        assert effect == [
            {
                "time": at,
                "metric": m.metric.value,
                "effect": m.effect,
                "cs_lower": m.cs_lower,
                "cs_upper": m.cs_upper,
            }
            for at, m in evidence
        ]
        assert e_values == [
            {"time": at, "metric": m.metric.value, "e_value": m.e_value, "threshold": m.threshold}
            for at, m in evidence
        ]


def test_the_timeline_rollouts_and_alerts_tables(
    client: Client, dashboard: dict[str, Any], written: Written
) -> None:
    cmd_1 = {"agent": AGENT, "rollout_id": "cmd-1"}
    timeline = run(
        client, sql_of(dashboard, "panel 'Deployment timeline"), cmd_1, written.query_range
    )
    first, rolled_back, second = written.states
    assert [(row["source"], row["event"], row["ref"]) for row in timeline] == [
        ("deployment", "deploy", str(first.generation)),
        ("judgement", "continue", written.judgements[0].id),
        ("judgement", "rollback", written.judgements[1].id),
        ("alert", "canary_regression", written.alerts[0].id),
        ("rollback", "requested", "rollback-1"),
        ("deployment", "rollback", str(rolled_back.generation)),
    ]

    rollouts = run(client, sql_of(dashboard, "panel 'Rollouts"), cmd_1, written.query_range)
    assert first.updated_at and rolled_back.updated_at and second.updated_at
    assert rollouts == [
        {
            "rollout_id": "cmd-2",
            "stable": second.stable_version,
            "canary": "v3",
            "started_at": naive(second.updated_at),
            "updated_at": naive(second.updated_at),
            "phase": "canary",
            "cause": "deploy",
        },
        {
            "rollout_id": "cmd-1",
            "stable": first.stable_version,
            "canary": "v2",
            "started_at": naive(first.updated_at),
            "updated_at": naive(rolled_back.updated_at),
            "phase": "rolled_back",
            "cause": "rollback",
        },
    ]

    alerts = run(client, sql_of(dashboard, "panel 'Alerts"), cmd_1, written.query_range)
    assert alerts == [  # newest first; the drift alert before the range is left out
        {
            "time": naive(alert.time),
            "kind": alert.kind.value,
            "severity": alert.severity.value,
            "version": alert.version,
            "metric": alert.metric.value if alert.metric else "",
            "rollout_id": alert.rollout_id,
            "message": alert.message,
        }
        for alert in reversed(written.alerts)
    ]
