"""What operators, CI jobs and the detector ask of the controller (``coalmine.commands``,
key = agent), the rollout plan a deploy carries, and the outcome the controller answers with
(``coalmine.command-outcomes``, key = agent) — applied with the new state, or rejected with
the reason — which ``coalmine deploy`` and the other commands wait for.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from schemas.deployment import DeploymentState
from schemas.plan import RolloutPlan
from schemas.trace import PRINTABLE_NOT_BLANK, Identifier

MAX_REASON_CHARS: Final = 1024

CommandId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.:-]+$")
]
"""The idempotency key of a command: a command id is applied at most once."""
Reason = Annotated[
    str, StringConstraints(max_length=MAX_REASON_CHARS, pattern=f"^$|{PRINTABLE_NOT_BLANK}")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CommandAction(StrEnum):
    DEPLOY = "deploy"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    RESUME = "resume"
    APPROVE = "approve"
    ABORT = "abort"


class Command(_Strict):
    id: CommandId
    time: AwareDatetime
    agent: Identifier
    action: CommandAction
    version: Identifier | None = Field(default=None, description="deploy; rollback --to")
    plan: RolloutPlan | None = Field(default=None, description="deploy (default plan if absent)")
    full: bool = Field(
        default=False, description="promote: skip every remaining step (`promote --full`)."
    )
    reason: Reason = ""
    issued_by: Identifier = Field(description="A person, `detector`, a CI job.")
    expected_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Rejected unless the deployment is at this generation."
    )


class OutcomeStatus(StrEnum):
    APPLIED = "applied"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    """The command id was applied before; nothing changed this time."""


class CommandOutcome(_Strict):
    command_id: CommandId
    agent: Identifier
    time: AwareDatetime
    status: OutcomeStatus
    reason: Reason = ""
    state: DeploymentState | None = Field(
        default=None, description="The deployment after the command (applied or duplicate)."
    )
