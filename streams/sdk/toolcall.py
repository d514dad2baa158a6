"""A tool call under its version's approval policy: the part of
:meth:`~streams.sdk.tracer.RequestSpan.call_tool` between "the agent wants to call a tool"
and "the tool runs", kept apart from the tracer.

The wait is a span of its own (kind ``custom``, name ``approval:<tool>``, attributes
``approval.id``, ``approval.outcome``, ``approval.decided_by``), so a request's latency can be
split into people's time and the agent's.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from schemas.approval import ApprovalRequest
from schemas.trace import SpanKind
from schemas.version import ApprovalPolicy
from streams.sdk.approval_rules import asks, redacted
from streams.sdk.approvals import (
    ApprovalResult,
    Approvals,
    ApprovalUnavailableError,
    Pending,
    default_requester,
)

if TYPE_CHECKING:
    from streams.sdk.tracer import RequestSpan, Span

SPAN_PREFIX: Final = "approval:"


@dataclass
class Asked:
    """A call waiting for a person: its span (open until the outcome) and its request."""

    approvals: Approvals
    span: Span
    pending: Pending

    def finish(self, result: ApprovalResult) -> None:
        """Close the wait's span with what came of it; raise unless the tool may run."""
        self.span.set_attribute("approval.id", result.request.id)
        self.span.set_attribute("approval.outcome", result.outcome.value)
        if result.decision is not None:
            self.span.set_attribute("approval.decided_by", result.decision.decided_by)
        try:
            result.raise_unless_runs()
        except Exception as exc:
            self.span.set_error(type(exc).__name__, str(exc))
            raise
        finally:
            self.span.end()


def policy_of(req: RequestSpan, tool: str) -> ApprovalPolicy | None:
    """The approval policy the request's version gives ``tool`` (None: calls run at once).
    Without the version's bundle nobody can tell: :class:`ApprovalUnavailableError`."""
    bundle = req.bundle
    if bundle is None:
        raise ApprovalUnavailableError(
            f"the bundle of {req.route.agent} {req.version} is not known, so whether {tool} "
            "needs approval cannot be told: not called"
        )
    spec = next((t for t in bundle.tools if t.name == tool), None)
    return None if spec is None else spec.approval


def ask_if_needed(
    req: RequestSpan,
    approvals: Approvals | None,
    tool: str,
    arguments: Mapping[str, Any],
    requested_by: str | None,
) -> Asked | None:
    """None when the call may run now; else the request, published and pending."""
    policy = policy_of(req, tool)
    why = asks(policy, arguments)
    if policy is None or why is None:
        return None
    req.note_approval_asked()
    if approvals is None:
        raise ApprovalUnavailableError(
            f"{tool} needs approval ({why}), but the tracer was given no Approvals: not called"
        )
    span = req.span(SpanKind.CUSTOM, SPAN_PREFIX + tool)
    now = approvals.now()
    try:
        request = ApprovalRequest(
            id=uuid.uuid4().hex,
            time=now,
            deadline=now + timedelta(seconds=policy.timeout_s),
            on_timeout=policy.on_timeout,
            agent=req.route.agent,
            version=req.version,
            environment=req.environment,
            tenant=req.tenant,
            tool=tool,
            arguments=redacted(arguments, policy.redact),
            asks_because=why,
            trace_id=req.trace_id,
            span_id=span.span_id,
            requested_by=requested_by or default_requester(req.route.agent),
        )
        pending = approvals.ask(request)
    except (ValidationError, ApprovalUnavailableError) as exc:
        span.set_error(type(exc).__name__, str(exc).splitlines()[0])
        span.end()
        if isinstance(exc, ApprovalUnavailableError):
            raise
        raise ApprovalUnavailableError(f"cannot ask for approval of {tool}: {exc}") from None
    return Asked(approvals, span, pending)
