"""The detector's topics in ClickHouse: ``coalmine.judgements``, ``coalmine.alerts`` and
``coalmine.rollbacks``, each record stored once.

Every event carries an ``id``, its idempotency key (the detector makes it deterministic, so
the same decision made again after a restart keeps it): the writer asks which (agent, id) of
a batch are stored and inserts only the others, like
:class:`~streams.storage.control.DeploymentEventWriter`. A later record of a stored id is a
repeat whatever its content: a detector re-emitting a decision may stamp another time on it,
and the first record is the one kept. The check is exact because each topic has one
partition, so one consumer, and inserts are synchronous. Row building is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from clickhouse_connect.driver.client import Client

from schemas.alert import Alert
from schemas.judgement import Judgement
from schemas.rollback import RollbackCommand
from streams.storage.clickhouse import DATABASE
from streams.storage.control import ControlWrite, Positioned, write_first_of_each

E = TypeVar("E", Judgement, Alert, RollbackCommand)

JUDGEMENT_COLUMNS: Final = (
    "agent",
    "id",
    "time",
    "rollout_id",
    "generation",
    "stable_version",
    "canary_version",
    "window_end",
    "windows_compared",
    "windows_unpaired",
    "verdict",
    "explanation",
    "detector",
    "parameters",
    "metrics.metric",
    "metrics.verdict",
    "metrics.estimate_baseline",
    "metrics.estimate_canary",
    "metrics.effect",
    "metrics.e_value",
    "metrics.cs_lower",
    "metrics.cs_upper",
    "metrics.n_baseline",
    "metrics.n_canary",
    "metrics.threshold",
    "metrics.tolerance",
    "metrics.explanation",
    "judgement",
    "kafka_offset",
)
ALERT_COLUMNS: Final = (
    "agent",
    "id",
    "time",
    "version",
    "baseline_version",
    "rollout_id",
    "generation",
    "metric",
    "kind",
    "severity",
    "observed",
    "baseline",
    "effect",
    "statistic",
    "threshold",
    "n_baseline",
    "n_observed",
    "detector",
    "parameters",
    "message",
    "alert",
    "kafka_offset",
)
ROLLBACK_COLUMNS: Final = (
    "agent",
    "id",
    "time",
    "from_version",
    "to_version",
    "reason",
    "alert_ids",
    "issued_by",
    "kafka_offset",
)


def judgement_row(judgement: Judgement, offset: int) -> tuple[Any, ...]:
    metrics = judgement.metrics
    return (
        judgement.agent,
        judgement.id,
        judgement.time,
        judgement.rollout_id,
        judgement.generation,
        judgement.stable_version,
        judgement.canary_version,
        judgement.window_end,
        judgement.windows_compared,
        judgement.windows_unpaired,
        judgement.verdict.value,
        judgement.explanation,
        judgement.detector,
        dict(judgement.parameters),
        [m.metric.value for m in metrics],
        [m.verdict.value for m in metrics],
        [m.estimate_baseline for m in metrics],
        [m.estimate_canary for m in metrics],
        [m.effect for m in metrics],
        [m.e_value for m in metrics],
        [m.cs_lower for m in metrics],
        [m.cs_upper for m in metrics],
        [m.n_baseline for m in metrics],
        [m.n_canary for m in metrics],
        [m.threshold for m in metrics],
        [m.tolerance for m in metrics],
        [m.explanation for m in metrics],
        judgement.model_dump_json(),
        offset,
    )


def alert_row(alert: Alert, offset: int) -> tuple[Any, ...]:
    evidence = alert.evidence
    return (
        alert.agent,
        alert.id,
        alert.time,
        alert.version,
        alert.baseline_version or "",
        alert.rollout_id or "",
        alert.generation,
        alert.metric.value if alert.metric else "",
        alert.kind.value,
        alert.severity.value,
        alert.observed,
        alert.baseline,
        alert.effect,
        evidence.statistic if evidence else None,
        evidence.threshold if evidence else None,
        evidence.n_baseline if evidence else None,
        evidence.n_canary if evidence else None,
        alert.detector,
        dict(alert.parameters),
        alert.message,
        alert.model_dump_json(),
        offset,
    )


def rollback_row(rollback: RollbackCommand, offset: int) -> tuple[Any, ...]:
    return (
        rollback.agent,
        rollback.id,
        rollback.time,
        rollback.from_version,
        rollback.to_version or "",
        rollback.reason,
        list(rollback.alert_ids),
        rollback.issued_by,
        offset,
    )


@dataclass(frozen=True)
class EventTable(Generic[E]):
    """Where a detector topic's events are stored, and how one becomes a row."""

    name: str
    model: type[E]
    columns: tuple[str, ...]
    row: Callable[[E, int], tuple[Any, ...]]


JUDGEMENTS_TABLE: Final = EventTable("judgements", Judgement, JUDGEMENT_COLUMNS, judgement_row)
ALERTS_TABLE: Final = EventTable("alerts", Alert, ALERT_COLUMNS, alert_row)
ROLLBACKS_TABLE: Final = EventTable("rollbacks", RollbackCommand, ROLLBACK_COLUMNS, rollback_row)

SAME_EVENT: Final = ""
"""The content every record of an id is compared by: none, an id is the event."""


class DetectorEventWriter:
    """Stores the first record of each (agent, id) of a detector topic; later ones are
    repeats (see the module's docstring)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def write(self, table: EventTable[E], events: Sequence[Positioned[E]]) -> ControlWrite:
        """Events in offset order. Raises the client's error when ClickHouse fails; the
        caller retries the whole batch, which this method makes safe."""
        if not events:
            return ControlWrite()
        stored = self._stored(table.name, {(p.value.agent, p.value.id) for p in events})
        return write_first_of_each(
            self._client,
            table.name,
            columns=table.columns,
            records=[((p.value.agent, p.value.id), SAME_EVENT, p) for p in events],
            stored=stored,
            row_of=lambda p: table.row(p.value, p.offset),
        )

    def _stored(self, table: str, keys: set[tuple[str, str]]) -> dict[Hashable, str]:
        found = self._client.query(
            f"SELECT DISTINCT agent, id FROM {DATABASE}.{table} "
            "WHERE (agent, id) IN {keys:Array(Tuple(String, String))}",
            parameters={"keys": sorted(keys)},
        )
        return {(agent, event_id): SAME_EVENT for agent, event_id in found.result_rows}
