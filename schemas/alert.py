"""An alert (``coalmine.alerts``, key = agent): something a person should know, raised on a
transition (a canary turning worse, a version drifting from its own history, a gate failing),
not on every window. People read them with ``coalmine alerts``, chat tools through the
webhook, programs from the topic.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from schemas.judgement import Count, EventId, Metric
from schemas.trace import Identifier

MAX_MESSAGE_CHARS = 1024


class AlertKind(StrEnum):
    CANARY_REGRESSION = "canary_regression"
    """The canary is worse than stable (the judge said ALERT or ROLLBACK)."""
    DRIFT = "drift"
    """A version is worse than its own recent history (a model changed under it)."""
    COST_SPIKE = "cost_spike"
    """A version's cost per request rose against its own recent history."""
    GATE_FAILED = "gate_failed"
    """A canary's offline evaluation figures failed its rollout plan's gate."""
    INCONCLUSIVE = "inconclusive"
    """The judge's horizon passed without a decision: a person should look."""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    """Traffic moved (a rollback) or must move."""


class AlertEvidence(BaseModel):
    """The test behind an alert, in numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    statistic: float = Field(ge=0, description="The e-value (or e-detector statistic).")
    threshold: float = Field(gt=0, description="Where the statistic raises this alert.")
    n_baseline: Count
    n_canary: Count = Field(description="Observations of the alerted version.")


class Alert(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        json_schema_extra={"$id": "https://coalmine.dev/schemas/alert.schema.json"},
    )

    id: EventId = Field(description="Deterministic: the same transition raised again keeps it.")
    time: AwareDatetime
    agent: Identifier
    version: Identifier = Field(description="The version the alert is about.")
    baseline_version: Identifier | None = Field(
        default=None, description="What it was compared with (absent: its own history)."
    )
    rollout_id: EventId | None = None
    generation: Annotated[int, Field(ge=1)] | None = None
    metric: Metric | None = None
    kind: AlertKind
    severity: Severity
    observed: float | None = None
    baseline: float | None = None
    effect: float | None = Field(
        default=None, description="Rate ratio or difference of means, as the metric defines."
    )
    evidence: AlertEvidence | None = None
    detector: Identifier
    parameters: dict[Identifier, float] = Field(default_factory=dict)
    message: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)] = Field(
        description="One readable line, e.g. for a chat tool."
    )
