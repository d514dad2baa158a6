"""What a request to the status page's JSON endpoints may ask: every parameter checked and
bounded before any query runs, so no request can make one read more than a day of minutes or
a few hundred rows. Pure: raises :class:`ValueError` with the line the page answers (400)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from schemas.judgement import EventId
from schemas.trace import Identifier

MAX_MINUTES = 1440
DEFAULT_MINUTES = 60
MAX_ALERTS = 200
DEFAULT_ALERTS = 20

_NAME: TypeAdapter[str] = TypeAdapter(Identifier)
_EVENT_ID: TypeAdapter[str] = TypeAdapter(EventId)


@dataclass(frozen=True)
class AgentQuery:
    agent: str
    rollout_id: str | None = None
    minutes: int = DEFAULT_MINUTES
    limit: int = DEFAULT_ALERTS


def agent_query(parameters: Mapping[str, str]) -> AgentQuery:
    """The parameters of a per-agent endpoint: ``agent`` (required), ``rollout_id``,
    ``minutes`` (1..1440) and ``limit`` (1..200), each optional where the endpoint allows."""
    unknown = sorted(set(parameters) - {"agent", "rollout_id", "minutes", "limit"})
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}")
    agent = parameters.get("agent")
    if agent is None:
        raise ValueError("the agent parameter is required (?agent=NAME)")
    if not _valid(_NAME, agent):
        raise ValueError("agent must be 1 to 128 printable characters")
    rollout_id = parameters.get("rollout_id")
    if rollout_id is not None and not _valid(_EVENT_ID, rollout_id):
        raise ValueError("rollout_id must be 1 to 128 letters, digits or _.:-")
    return AgentQuery(
        agent,
        rollout_id,
        _bounded(parameters, "minutes", DEFAULT_MINUTES, MAX_MINUTES),
        _bounded(parameters, "limit", DEFAULT_ALERTS, MAX_ALERTS),
    )


def _bounded(parameters: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    text = parameters.get(name)
    if text is None:
        return default
    digits = len(str(maximum))
    if not (
        text.isascii() and text.isdigit() and len(text) <= digits and 1 <= int(text) <= maximum
    ):
        raise ValueError(f"{name} must be a whole number from 1 to {maximum}, not {text[:20]!r}")
    return int(text)


def _valid(kind: TypeAdapter[str], text: str) -> bool:
    try:
        kind.validate_python(text)
    except ValidationError:
        return False
    return True
