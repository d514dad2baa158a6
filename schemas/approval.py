"""Human approval of a tool call: the request an agent publishes when its version's policy
says a person must approve the call (``coalmine.approval-requests``, key = request id), and
the decisions people — and the asking agent, when the deadline passes — publish about it
(``coalmine.approval-decisions``, key = request id, one partition, the broker's append time).

Which decision counts is one rule every reader applies to the decision log in order
(:func:`streams.sdk.approval_rules.judge`): the first decision about a request wins when it is
the requester's ``expire`` or was appended by the broker no later than the request's
deadline; every other decision about it is refused.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from schemas.command import Reason
from schemas.trace import Identifier
from schemas.version import OnTimeout, VersionLabel

MAX_ARGUMENTS_BYTES: Final = 16 * 1024
"""Largest (redacted) arguments a request carries, as compact JSON."""

ApprovalId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
"""32 hex digits (a UUID4): unguessable until the request is published."""
HexId16 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
HexId32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ApprovalRequest(_Strict):
    """A tool call waiting for a person: what would run, where, and until when."""

    id: ApprovalId
    time: AwareDatetime = Field(description="When the agent asked (its clock).")
    deadline: AwareDatetime = Field(
        description="Decisions the broker appends after it are refused."
    )
    on_timeout: OnTimeout
    agent: Identifier
    version: VersionLabel
    environment: Identifier = "production"
    tenant: Identifier | None = None
    tool: Identifier
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The call's arguments, redacted by the policy."
    )
    asks_because: Annotated[str, StringConstraints(max_length=1024)] = Field(
        description="The policy's condition that held (`every call`, `amount > 100`)."
    )
    trace_id: HexId32
    span_id: HexId16 = Field(description="The span of the wait (`approval:<tool>`).")
    requested_by: Identifier = Field(description="Who or what asked (process, user, job).")

    @field_validator("arguments")
    @classmethod
    def _bounded(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(arguments, separators=(",", ":"), allow_nan=False).encode())
        if size > MAX_ARGUMENTS_BYTES:
            raise ValueError(f"{size:,} bytes of arguments, more than {MAX_ARGUMENTS_BYTES:,}")
        return arguments


class Decision(StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    EXPIRE = "expire"
    """The requester's record that the deadline passed without a decision."""


class ApprovalDecision(_Strict):
    id: ApprovalId = Field(description="This decision's own id (a UUID4).")
    request_id: ApprovalId
    agent: Identifier
    time: AwareDatetime = Field(description="When it was sent (the sender's clock).")
    decision: Decision
    decided_by: Identifier
    reason: Reason = ""


class Outcome(StrEnum):
    """What came of a request, by its winning decision."""

    GRANTED = "granted"
    DENIED = "denied"
    TIMED_OUT = "timed_out"


OUTCOME_OF: Final = {
    Decision.APPROVE: Outcome.GRANTED,
    Decision.DENY: Outcome.DENIED,
    Decision.EXPIRE: Outcome.TIMED_OUT,
}
