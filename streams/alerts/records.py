"""The detector's events as records of their topics (``coalmine.judgements``,
``coalmine.alerts``, ``coalmine.rollbacks``, key = agent): parsed strictly, for the worker
that stores them and the command line that shows alerts. pydantic and the schemas only."""

from __future__ import annotations

from typing import TypeVar

from schemas.alert import Alert
from schemas.judgement import Judgement
from schemas.rollback import RollbackCommand
from streams.versions.catalog import parse_keyed_record

Event = TypeVar("Event", Judgement, Alert, RollbackCommand)


def parse_event_record(model: type[Event], key: bytes | None, value: bytes | None) -> Event:
    """The ``model`` event a record holds, whose key must be its agent; otherwise
    :class:`~streams.versions.catalog.InvalidRecordError` saying why."""
    return parse_keyed_record(
        model,
        key,
        value,
        key_of=lambda event: event.agent,
        what=f"{'an' if model.__name__[0] in 'AEIOU' else 'a'} {model.__name__}",
        deleted="events are never deleted",
    )
