"""A request to roll an agent's canary back (``coalmine.rollbacks``, key = agent), from the
detector or anyone; the controller applies it like an operator's rollback command."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.command import CommandId, Reason
from schemas.trace import Identifier


class RollbackCommand(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: CommandId
    time: AwareDatetime
    agent: Identifier
    from_version: Identifier = Field(description="The canary to take out of traffic.")
    to_version: Identifier | None = Field(
        default=None, description="Absent: the current stable version."
    )
    reason: Reason
    alert_ids: tuple[CommandId, ...] = ()
    issued_by: Identifier
