"""A rollout plan, part of a deploy command and of the deployment state: the canary's steps
of traffic share with their minimum durations and approval gates, what a ROLLBACK verdict
does, the judge's settings and an optional offline evaluation gate."""

from __future__ import annotations

import itertools
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.judgement import Metric

MAX_STEPS: Final = 20

Weight = Annotated[float, Field(gt=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RolloutStep(_Strict):
    weight: Weight = Field(description="The canary's share of traffic during this step.")
    min_duration_s: Annotated[float, Field(ge=0, le=30 * 24 * 3600)] = 0.0
    approval: bool = Field(
        default=False, description="A person must approve before this step starts."
    )
    require_pass: bool = Field(
        default=False,
        description="The step ends only once its minimum duration has passed AND the judge "
        "said PASS during it (a PASS for the deployment's current generation, latched until "
        "the next step starts); otherwise time alone ends it.",
    )


class EvalGate(_Strict):
    """Offline evaluation spans of the version (``environment = 'eval'``) that must exist
    before any traffic moves."""

    min_cases: Annotated[int, Field(ge=1, le=10_000_000)]
    min_quality: Annotated[float, Field(ge=0, le=1)] | None = None
    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None


class JudgeOverrides(_Strict):
    """The judge's settings for this rollout; unset fields keep the judge's defaults."""

    alpha_rollback: Annotated[float, Field(gt=0, lt=1)] | None = None
    alpha_alert: Annotated[float, Field(gt=0, lt=1)] | None = None
    tolerances: dict[Metric, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="Per metric (a name of schemas.judgement.Metric): the largest degradation "
        "still accepted for PASS (a rate ratio, a log ratio, a drop in quality).",
    )
    horizon_s: Annotated[float, Field(gt=0)] | None = None


class RolloutPlan(_Strict):
    steps: tuple[RolloutStep, ...] = Field(min_length=1, max_length=MAX_STEPS)
    auto_rollback: bool = Field(
        default=True, description="A ROLLBACK verdict rolls back; false: it alerts and pauses."
    )
    judge: JudgeOverrides = Field(default_factory=JudgeOverrides)
    eval_gate: EvalGate | None = None

    @model_validator(mode="after")
    def _weights_grow(self) -> RolloutPlan:
        weights = [step.weight for step in self.steps]
        if any(later <= earlier for earlier, later in itertools.pairwise(weights)):
            raise ValueError(f"step weights must grow strictly, got {weights}")
        return self


DEFAULT_PLAN: Final = RolloutPlan(
    steps=(
        RolloutStep(weight=0.05, min_duration_s=300),
        RolloutStep(weight=0.25, min_duration_s=600),
        RolloutStep(weight=0.5, min_duration_s=600),
        RolloutStep(weight=1.0, min_duration_s=0),
    )
)
