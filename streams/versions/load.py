"""A version file (YAML or JSON, kept in a team's own repository) → its bundle and metadata.

Pure: bytes in, a :class:`VersionFile` or a :class:`VersionFileError` out, whose message is
one line naming the file and the place in it. Whatever passes is stored for good, so anything
ambiguous is refused: unknown fields, duplicate keys, NaN or infinities, YAML aliases and
values that are not JSON (dates), text that is not UTF-8, and files or bundles over a size.

A file holds ``agent``, ``version``, ``description`` and the bundle's fields (``prompts``,
``model``, ``tools``, ``guardrails``, ``knowledge_bases``, ``extra``; see
:class:`schemas.version.AgentBundle`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.trace import Identifier
from schemas.version import (
    MAX_BUNDLE_BYTES,
    AgentBundle,
    AgentVersion,
    Description,
    VersionLabel,
    bundle_digest,
    canonical_json,
)
from streams.errors import CoalmineError

if TYPE_CHECKING:
    import yaml

MAX_FILE_BYTES: Final = 4 * MAX_BUNDLE_BYTES
"""Largest version file read: indented YAML or JSON of the largest bundle, with comments."""
MAX_DEPTH: Final = 32
"""Deepest nesting accepted (tool input schemas nest; nothing sensible nests deeper)."""
METADATA_FIELDS: Final = ("agent", "version", "description")
YAML_SUFFIXES: Final = (".yaml", ".yml")


class VersionFileError(CoalmineError):
    """A version file that cannot be registered; the message is one line saying why."""


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: Identifier
    version: VersionLabel
    description: Description = ""


@dataclass(frozen=True)
class VersionFile:
    """What a version file says: the label, the description and the content."""

    agent: str
    version: str
    description: str
    bundle: AgentBundle
    digest: str

    def as_version(self, created_at: datetime, created_by: str) -> AgentVersion:
        return AgentVersion(
            agent=self.agent,
            version=self.version,
            digest=self.digest,
            created_at=created_at,
            created_by=created_by,
            description=self.description,
            bundle=self.bundle,
        )


def parse_version_file(data: bytes, name: str) -> VersionFile:
    """Parse and check a version file's bytes; ``name`` (its path) picks the syntax by suffix
    and starts every error message."""
    try:
        return _parse(data, PurePath(name).suffix.lower())
    except VersionFileError as exc:
        raise VersionFileError(f"{name}: {exc}") from None


def _parse(data: bytes, suffix: str) -> VersionFile:
    document = _document(data, suffix, "a version file")
    metadata = _validated(_Metadata, {k: v for k, v in document.items() if k in METADATA_FIELDS})
    bundle = _validated(
        AgentBundle, {k: v for k, v in document.items() if k not in METADATA_FIELDS}
    )
    size = len(canonical_json(bundle))
    if size > MAX_BUNDLE_BYTES:
        raise VersionFileError(
            f"the bundle is {size:,} bytes of canonical JSON; at most {MAX_BUNDLE_BYTES:,}"
        )
    return VersionFile(
        agent=metadata.agent,
        version=metadata.version,
        description=metadata.description,
        bundle=bundle,
        digest=bundle_digest(bundle),
    )


def parse_model_file(data: bytes, name: str, model: type[M], what: str) -> M:
    """A YAML or JSON file of ``model`` (a rollout plan, …), read as strictly as a version
    file; ``what`` (\"a plan file\") names it in the error."""
    try:
        return _validated(model, _document(data, PurePath(name).suffix.lower(), what))
    except VersionFileError as exc:
        raise VersionFileError(f"{name}: {exc}") from None


def read_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes, reading no more than one byte past ``limit`` (``/dev/zero``)."""
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise VersionFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise VersionFileError(f"{path}: the file is over {limit:,} bytes")
    return data


def _document(data: bytes, suffix: str, what: str) -> dict[str, Any]:
    if len(data) > MAX_FILE_BYTES:
        raise VersionFileError(f"the file is over {MAX_FILE_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VersionFileError(f"not UTF-8 text (byte {exc.start})") from None
    if suffix in YAML_SUFFIXES:
        document = _yaml_document(text)
    elif suffix == ".json":
        document = _json_document(text)
    else:
        raise VersionFileError(f"{what}'s name ends in .yaml, .yml or .json")
    if not isinstance(document, dict):
        raise VersionFileError("the file must hold a mapping of fields")
    check_json_value(document)
    return document


def _json_document(text: str) -> Any:
    def no_constants(name: str) -> None:
        raise VersionFileError(f"{name} is not a number JSON allows")

    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise VersionFileError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise VersionFileError(f"nested deeper than {MAX_DEPTH} levels") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise VersionFileError(f"the key {key!r} appears twice in one object")
        document[key] = value
    return document


def _yaml_document(text: str) -> Any:
    import yaml  # noqa: PLC0415 (the worker extra: reading a JSON file must not need it)

    try:
        return yaml.load(text, Loader=_strict_yaml_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise VersionFileError(f"not valid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise VersionFileError(f"not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise VersionFileError(f"nested deeper than {MAX_DEPTH} levels") from None


_loader: type[yaml.SafeLoader] | None = None


def _strict_yaml_loader() -> type[yaml.SafeLoader]:
    """PyYAML's safe loader, refusing aliases (a few lines of them expand to gigabytes) and
    duplicate keys (PyYAML would keep the last one silently)."""
    global _loader  # noqa: PLW0603 (built once, on first use, since yaml is imported lazily)
    if _loader is not None:
        return _loader
    import yaml  # noqa: PLC0415

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.MarkedYAMLError(
                    problem="aliases (*name) are not accepted; write the value out",
                    problem_mark=self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen = []
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.MarkedYAMLError(
                        problem=f"the key {key!r} appears twice in one mapping",
                        problem_mark=key_node.start_mark,
                    )
                seen.append(key)
            return super().construct_mapping(node, deep=deep)

    _loader = StrictLoader
    return _loader


def check_json_value(value: Any, path: str = "", depth: int = 0) -> None:
    """Refuse what JSON cannot say or says ambiguously: non-string keys, dates, NaN and
    infinities, lone surrogates, nesting deeper than :data:`MAX_DEPTH`."""
    where = path or "the file"
    if depth > MAX_DEPTH:
        raise VersionFileError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise VersionFileError(f"{where}: the key {key!r} is not text; quote it")
            _check_text(key, where)
            check_json_value(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json_value(item, f"{path}.{index}", depth + 1)
    elif isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise VersionFileError(f"{where}: {value} is not a number JSON allows")
    elif not isinstance(value, bool | int | None):
        raise VersionFileError(
            f"{where}: a {type(value).__name__} is not a JSON value; quote it to make it text"
        )


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise VersionFileError(f"{where}: text holds a lone surrogate (\\ud800-\\udfff)") from None


_SCALAR_MEMBERS: Final = frozenset({"str", "bool", "int", "float"})


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], document: dict[str, Any]) -> M:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise VersionFileError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem pydantic found, as ``field.path: what is wrong``, and how many more.
    A value that fits no member of a union of scalars is one problem, not one per member."""
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        if loc and loc[-1] in _SCALAR_MEMBERS:
            loc.pop()
            message = "should be text, a number, true/false or null"
            if error["type"] == "finite_number":
                message = "should be a finite number"
        else:
            message = _message(error["type"], error["msg"], error.get("input"))
        line = f"{'.'.join(map(str, loc))}: {message}" if loc else message
        if line not in problems:
            problems.append(line)
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


_MESSAGES: Final[dict[str, Callable[[str, Any], str]]] = {
    "extra_forbidden": lambda msg, value: "unknown field",
    "missing": lambda msg, value: "required",
    "string_type": lambda msg, value: (
        f"should be text (quote it: '{value}')"
        if isinstance(value, int | float)
        else "should be text"
    ),
}


def _message(kind: str, msg: str, value: Any) -> str:
    explain = _MESSAGES.get(kind)
    return explain(msg, value) if explain else msg.removeprefix("Value error, ")
