"""Deployment state: who gets an agent's traffic (``coalmine.deployments``, compacted, key =
agent). The controller is its single writer; SDK routers read it from the beginning and follow
it. ``canary_weight`` is the canary's share of traffic *now*: zero whenever the canary must
not serve (gated, rolled back, promoted, idle).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.plan import RolloutPlan
from schemas.trace import Identifier
from schemas.version import Digest

RECENT_COMMAND_IDS: Final = 64
"""How many applied command ids a state remembers, to answer a re-sent one as a duplicate."""


class Phase(StrEnum):
    IDLE = "idle"
    """Only a stable version (or nothing yet)."""
    GATED = "gated"
    """A canary waits for its offline evaluation figures; no traffic moves."""
    CANARY = "canary"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting_approval"
    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"


class GateFigures(BaseModel):
    """What the evaluation gate saw of the canary's eval spans."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    cases: Annotated[int, Field(ge=0)]
    quality: float | None
    error_rate: float | None
    passed: bool


class DeploymentChange(BaseModel):
    """Why the state is what it is: the audit row of this generation
    (``coalmine.deployment_events``) is this record."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    from_phase: Phase
    cause: Identifier = Field(
        description="A command action (`deploy`, `rollback`, …), `step` (a step's time passed), "
        "`gate` (evaluation figures), `judgement`."
    )
    command_id: str | None = None
    issued_by: Identifier | None = None
    reason: str = ""
    evidence: dict[str, str | float | int | bool | None] = Field(
        default_factory=dict, description="Gate figures, the verdict and its metric, …"
    )


class DeploymentState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    agent: Identifier
    phase: Phase = Phase.IDLE
    stable_version: Identifier | None = None
    stable_digest: Digest | None = None
    canary_version: Identifier | None = None
    canary_digest: Digest | None = None
    canary_weight: Annotated[float, Field(ge=0, le=1)] = 0.0
    rollout_id: str | None = Field(
        default=None,
        description="The deploy command's id: routers hash it with the routing key, so a new "
        "deployment reshuffles who is in the canary while its steps only add keys.",
    )
    plan: RolloutPlan | None = None
    step_index: Annotated[int, Field(ge=0)] | None = None
    step_started_at: AwareDatetime | None = None
    step_passed: bool = Field(
        default=False,
        description="The judge said PASS during the current step (latched until the next "
        "step starts): what a step with `require_pass` waits for.",
    )
    gate: GateFigures | None = None
    previous_stables: tuple[Identifier, ...] = Field(
        default=(), description="Versions that were stable before, newest first."
    )
    generation: Annotated[int, Field(ge=0)] = 0
    updated_at: AwareDatetime | None = None
    last_command_id: str | None = None
    last_reason: str = ""
    recent_command_ids: tuple[str, ...] = Field(
        default=(),
        max_length=RECENT_COMMAND_IDS,
        description="Ids of the commands last applied to this agent, newest first: one sent "
        "again is answered `duplicate` and changes nothing.",
    )
    input_offsets: dict[str, int] = Field(
        default_factory=dict,
        description="The controller's position when it wrote this record, per input "
        "`topic:partition`: the next offset to read. Every input before it was processed "
        "(applied or rejected); a restarted controller skips what it reads again below it.",
    )
    change: DeploymentChange | None = Field(
        default=None, description="What made this generation; None only before the first."
    )
