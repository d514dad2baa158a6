"""The controller's compacted topics read as tables: deployment states by agent, version
digests by (agent, version). Records that do not parse are skipped and logged."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from schemas.deployment import DeploymentState
from schemas.version import AgentVersion
from streams.sdk.compacted import Table

log = logging.getLogger(__name__)


def load_states(table: Table) -> dict[str, DeploymentState]:
    """The deployment records of a compacted-topic table, by agent (unreadable ones skipped,
    logged: the controller is their only writer)."""
    states = {}
    for key, value in table.items():
        if value is None:
            continue
        try:
            state = DeploymentState.model_validate_json(value)
        except ValidationError as exc:
            log.error("skipping an unreadable deployment record %r: %s", key, exc)
            continue
        states[state.agent] = state
    return states


def version_digests(table: Table) -> dict[tuple[str, str], str]:
    digests = {}
    for key, value in table.items():
        if value is None:
            continue
        try:
            version = AgentVersion.model_validate_json(value)
        except ValidationError as exc:
            log.warning("skipping an unreadable version record %r: %s", key, exc)
            continue
        digests[(version.agent, version.version)] = version.digest
    return digests
