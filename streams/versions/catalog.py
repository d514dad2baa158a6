"""What ``coalmine.versions`` says, and whether a registration is new, a no-op or refused.

Pure: records go in (in offset order), versions come out. Every reader folds the topic the
same way, so every reader agrees on what a label names:

* the first record of a key (``agent/version``) is the version; a later record with the same
  digest is a repeat and changes nothing;
* a later record with another digest is a *conflict*: it is not the version, and it is
  reported (:attr:`VersionCatalog.conflicts`). Two registrations of one label with other
  content racing each other both pass their check; both records land, in one order, on the
  one partition, and the first one wins everywhere (see :mod:`streams.versions.registry`
  for how the loser learns it lost);
* a record that is not a valid :class:`~schemas.version.AgentVersion`, whose value does not
  match its key, or a tombstone, is skipped and reported: versions are never deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.version import AgentVersion, version_key
from streams.errors import CoalmineError
from streams.sdk.compacted import Record
from streams.versions.load import describe_validation_error

M = TypeVar("M", bound=BaseModel)


class VersionNotFoundError(CoalmineError):
    """No such agent, or no such version of it."""


class VersionConflictError(CoalmineError):
    """The label names other content: versions are never changed."""


class Decision(StrEnum):
    NEW = "new"
    """Not registered yet: publish it."""
    SAME = "same"
    """Registered with this very content: nothing to do."""
    CONFLICT = "conflict"
    """Registered with other content: refused."""


def decide(registered: AgentVersion | None, candidate: AgentVersion) -> Decision:
    """What registering ``candidate`` means, given what its label names now."""
    if registered is None:
        return Decision.NEW
    return Decision.SAME if registered.digest == candidate.digest else Decision.CONFLICT


def conflict_message(registered: AgentVersion, candidate_digest: str) -> str:
    return (
        f"{registered.agent} {registered.version} is already registered with digest "
        f"{registered.digest} (by {registered.created_by} at "
        f"{registered.created_at.isoformat(timespec='seconds')}); this content has digest "
        f"{candidate_digest}. Versions never change: register it under a new label"
    )


class InvalidRecordError(ValueError):
    """A record of a control topic that is not what the topic holds; the text says why."""


def parse_version_record(key: bytes | None, value: bytes | None) -> AgentVersion:
    """The version a ``coalmine.versions`` record holds, or :class:`InvalidRecordError`."""
    return parse_keyed_record(
        AgentVersion,
        key,
        value,
        key_of=lambda v: v.key,
        what="an agent version",
        deleted="versions are never deleted",
    )


def parse_keyed_record(
    model: type[M],
    key: bytes | None,
    value: bytes | None,
    *,
    key_of: Callable[[M], str],
    what: str,
    deleted: str,
) -> M:
    """The ``model`` a state topic's record holds, whose key must be ``key_of`` its value;
    :class:`InvalidRecordError` saying why not (``what`` the model is, for people;
    ``deleted``: why a tombstone is not one)."""
    if value is None:
        raise InvalidRecordError(f"a tombstone ({deleted})")
    try:
        parsed = model.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidRecordError(f"not {what}: {describe_validation_error(exc)}") from None
    if key != key_of(parsed).encode():
        raise InvalidRecordError(f"its key {key!r} is not {key_of(parsed)!r}, the key of its value")
    return parsed


@dataclass(frozen=True)
class Conflict:
    """A record naming a registered label with other content; the label keeps its first."""

    key: str
    kept_digest: str
    refused_digest: str
    offset: int


@dataclass(frozen=True)
class Skipped:
    offset: int
    reason: str


@dataclass
class VersionCatalog:
    """The versions of ``coalmine.versions``, folded record by record in offset order."""

    versions: dict[str, AgentVersion] = field(default_factory=dict)
    """By key ``agent/version``."""
    offsets: dict[str, int] = field(default_factory=dict)
    """The offset of each version's first record."""
    conflicts: list[Conflict] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @classmethod
    def of(cls, records: Iterable[Record]) -> VersionCatalog:
        catalog = cls()
        for record in records:
            catalog.observe(record)
        return catalog

    def observe(self, record: Record) -> AgentVersion | None:
        """Fold one record in; returns the version when it is a new one."""
        try:
            version = parse_version_record(record.key, record.value)
        except InvalidRecordError as exc:
            self.skipped.append(Skipped(record.offset, str(exc)))
            return None
        registered = self.versions.get(version.key)
        if registered is None:
            self.versions[version.key] = version
            self.offsets[version.key] = record.offset
            return version
        if registered.digest != version.digest:
            self.conflicts.append(
                Conflict(version.key, registered.digest, version.digest, record.offset)
            )
        return None

    def observe_all(self, records: Iterable[Record]) -> dict[tuple[str, str], str]:
        """Fold ``records`` in; returns the digest of every version by (agent, version)."""
        for record in records:
            self.observe(record)
        return {(v.agent, v.version): v.digest for v in self.versions.values()}

    def get(self, agent: str, version: str) -> AgentVersion | None:
        return self.versions.get(version_key(agent, version))

    def require(self, agent: str, version: str) -> AgentVersion:
        found = self.get(agent, version)
        if found is not None:
            return found
        known = self.require_agent(agent)
        labels = ", ".join(v.version for v in known[-5:])
        raise VersionNotFoundError(f"agent {agent!r} has no version {version!r} (latest: {labels})")

    def require_agent(self, agent: str) -> list[AgentVersion]:
        """The agent's versions (:meth:`of_agent`); :class:`VersionNotFoundError` if none."""
        known = self.of_agent(agent)
        if not known:
            raise VersionNotFoundError(f"no versions of agent {agent!r} are registered")
        return known

    def of_agent(self, agent: str) -> list[AgentVersion]:
        """The agent's versions in the order they were registered."""
        found = [(self.offsets[key], v) for key, v in self.versions.items() if v.agent == agent]
        return [version for _, version in sorted(found, key=lambda pair: pair[0])]
