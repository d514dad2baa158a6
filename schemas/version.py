"""An agent version: the immutable bundle of everything that shapes an agent's behaviour —
prompts, model and parameters, tools with their input schemas, guardrails and knowledge-base
references — as published on the compacted ``coalmine.versions`` (key ``agent/version``).

The ``digest`` is the sha256 of the bundle's canonical JSON (:func:`bundle_digest`): two
registrations of one label are the same version exactly when their digests are equal, so a
label is never given other content, and registering the same content again changes nothing.
Descriptive metadata (description, who, when) is outside the digest.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.trace import PRINTABLE_NOT_BLANK, UNPRINTABLE, Identifier

MAX_BUNDLE_BYTES: Final = 256 * 1024
"""Largest canonical bundle accepted: prompts and tool schemas, not knowledge bases."""
MAX_PROMPT_CHARS: Final = 100_000

Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE_NOT_BLANK)]
Text = Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]
Scalar = str | bool | int | float | None
"""A model parameter or config value: what YAML and JSON agree on without nesting."""
VersionLabel = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=128,
        pattern=f"^[^/{UNPRINTABLE}]*[^\\s/{UNPRINTABLE}][^/{UNPRINTABLE}]*$",
    ),
]
"""A version label such as ``v13``: printable, not blank, and without ``/``, so that the
record key ``agent/version`` names one version even when an agent's name holds a ``/``."""
Description = Annotated[str, StringConstraints(max_length=2048)]
"""What a version changes, for people; not part of the digest."""
DIGEST_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"
Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    provider: Identifier
    model: Identifier
    parameters: dict[Name, Scalar] = Field(
        default_factory=dict, description="temperature, max_tokens, top_p, …"
    )


ArgumentPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"),
]
"""A value inside a tool call's arguments, by keys (and list indexes) joined with dots:
``amount``, ``refund.amount``, ``items.0.price``."""
MAX_APPROVAL_TIMEOUT_S: Final = 7 * 24 * 3600


class Comparison(StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="


class ArgumentCondition(_Strict):
    """``field op value``, e.g. ``amount > 100``: the call asks for approval when it holds, or
    when it cannot be told (the field is missing, or not comparable with ``value``)."""

    field: ArgumentPath
    op: Comparison
    value: str | bool | int | float


class OnTimeout(StrEnum):
    DENY = "deny"
    ALLOW = "allow"


class ApprovalPolicy(_Strict):
    """A tool whose calls a person must approve before they run (a refund, an email, a
    deletion). The SDK asks, waits up to ``timeout_s`` and then applies ``on_timeout``."""

    when: tuple[ArgumentCondition, ...] = Field(
        default=(),
        description="Ask only when one of these holds (none: every call asks).",
    )
    timeout_s: Annotated[int, Field(ge=1, le=MAX_APPROVAL_TIMEOUT_S)] = 900
    on_timeout: OnTimeout = OnTimeout.DENY
    redact: tuple[ArgumentPath, ...] = Field(
        default=(),
        description="Arguments replaced by `[redacted]` in the request people see and store.",
    )


class ToolSpec(_Strict):
    name: Identifier
    description: Text = ""
    input_schema: dict[str, Any] = Field(
        default_factory=dict, description="JSON Schema of the tool's input."
    )
    approval: ApprovalPolicy | None = Field(
        default=None, description="Calls need a person's approval (absent: they never do)."
    )


class GuardrailSpec(_Strict):
    name: Identifier
    kind: Identifier
    config: dict[Name, Scalar] = Field(default_factory=dict)


class KnowledgeBaseRef(_Strict):
    name: Identifier
    uri: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    revision: Name | None = None


class AgentBundle(_Strict):
    """The content of a version: what the digest covers and what the router hands an agent."""

    prompts: dict[Name, Text] = Field(
        default_factory=dict, description="Prompt name → template text."
    )
    model: ModelSpec
    tools: tuple[ToolSpec, ...] = ()
    guardrails: tuple[GuardrailSpec, ...] = ()
    knowledge_bases: tuple[KnowledgeBaseRef, ...] = ()
    extra: dict[Name, Scalar] = Field(default_factory=dict, description="A small free map.")

    @model_validator(mode="after")
    def _names_are_unique(self) -> AgentBundle:
        # A diff, a router and an agent look tools (and the rest) up by name: two of one name
        # would leave it to chance which one they find.
        for field, items in (
            ("tools", self.tools),
            ("guardrails", self.guardrails),
            ("knowledge_bases", self.knowledge_bases),
        ):
            names = [item.name for item in items]
            if twice := sorted({name for name in names if names.count(name) > 1}):
                raise ValueError(f"{field}: the name {twice[0]!r} is used more than once")
        return self


class AgentVersion(_Strict):
    """One registered version, as published on ``coalmine.versions``."""

    agent: Identifier
    version: VersionLabel
    digest: Digest
    created_at: AwareDatetime
    created_by: Identifier
    description: Description = ""
    bundle: AgentBundle

    @model_validator(mode="after")
    def _digest_matches_bundle(self) -> AgentVersion:
        # A record whose digest does not name its content is refused wherever it is read:
        # readers compare versions by digest alone.
        actual = bundle_digest(self.bundle)
        if self.digest != actual:
            raise ValueError(f"digest {self.digest} is not the bundle's digest ({actual})")
        return self

    @property
    def key(self) -> str:
        return version_key(self.agent, self.version)


def version_key(agent: str, version: str) -> str:
    """The record key on ``coalmine.versions``."""
    return f"{agent}/{version}"


def canonical_json(bundle: AgentBundle) -> bytes:
    """Sorted keys, no whitespace, UTF-8: equal content gives equal bytes. Fields left at their
    default are left out, so a field added to the bundle later (with a default) does not change
    the digest of any version registered before it."""
    return json.dumps(
        bundle.model_dump(mode="json", exclude_defaults=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode()


def bundle_digest(bundle: AgentBundle) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(bundle)).hexdigest()
