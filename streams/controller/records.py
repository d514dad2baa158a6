"""Deployment states by agent, from the compacted topic read as a table. Records that do not
parse are skipped and logged."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.deployment import DeploymentState
from streams.sdk.compacted import Table

log = logging.getLogger(__name__)


M = TypeVar("M", bound=BaseModel)


def _records(table: Table, model: type[M]) -> list[M]:
    """The live values of ``table`` as ``model``; one that does not parse is skipped, logged."""
    records = []
    for key, value in table.items():
        if value is None:
            continue
        try:
            records.append(model.model_validate_json(value))
        except ValidationError as exc:
            log.error("skipping an unreadable %s record %r: %s", model.__name__, key, exc)
    return records


def load_states(table: Table) -> dict[str, DeploymentState]:
    """The deployment records of a compacted-topic table, by agent."""
    return {state.agent: state for state in _records(table, DeploymentState)}
