"""Two versions of an agent side by side, as a person reads them: prompt text by lines
(a unified diff per prompt), model and parameters, tools / guardrails / knowledge bases
added, removed or changed (changes of nested values such as a tool's input schema or its
approval policy by JSON path), and the free ``extra`` map. Pure: versions in, lines out.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel

from schemas.version import AgentVersion, GuardrailSpec, KnowledgeBaseRef, ToolSpec

MAX_VALUE_CHARS: Final = 80
"""A changed value longer than this is shown cut, with its length."""
CONTEXT_LINES: Final = 2
INDENT: Final = "  "


def diff_versions(old: AgentVersion, new: AgentVersion) -> list[str]:
    """The differences from ``old`` to ``new``, one printable line each."""
    lines = [f"{old.agent} {old.version} → {new.version}"]
    if old.digest == new.digest:
        lines.append(f"same content (digest {old.digest})")
        return lines + value_changes(old.description, new.description, "description")
    lines.append(f"digest {old.digest} → {new.digest}")
    lines += value_changes(old.description, new.description, "description")
    a, b = old.bundle, new.bundle
    lines += _section("prompts", prompt_changes(a.prompts, b.prompts, old.version, new.version))
    lines += _section("model", value_changes(_plain(a.model), _plain(b.model)))
    lines += _section("tools", named_changes(a.tools, b.tools))
    lines += _section("guardrails", named_changes(a.guardrails, b.guardrails))
    lines += _section("knowledge_bases", named_changes(a.knowledge_bases, b.knowledge_bases))
    lines += _section("extra", value_changes(a.extra, b.extra))
    return lines


def _section(title: str, changes: list[str]) -> list[str]:
    return [f"{title}:", *(INDENT + line for line in changes)] if changes else []


def prompt_changes(
    old: Mapping[str, str], new: Mapping[str, str], old_label: str, new_label: str
) -> list[str]:
    lines = []
    for name in sorted(old.keys() | new.keys()):
        if name not in old:
            lines.append(f"added: {name} ({_line_count(new[name])})")
        elif name not in new:
            lines.append(f"removed: {name} ({_line_count(old[name])})")
        elif old[name] != new[name]:
            lines.append(f"changed: {name}")
            unified = difflib.unified_diff(
                old[name].splitlines(),
                new[name].splitlines(),
                fromfile=f"{old_label}/{name}",
                tofile=f"{new_label}/{name}",
                n=CONTEXT_LINES,
                lineterm="",
            )
            text_lines = [INDENT + line for line in unified]
            lines += text_lines or [f"{INDENT}(only line endings or the final newline differ)"]
    return lines


def _line_count(text: str) -> str:
    count = len(text.splitlines())
    return f"{count} line{'' if count == 1 else 's'}"


NamedSpec = ToolSpec | GuardrailSpec | KnowledgeBaseRef


def named_changes(old: Sequence[NamedSpec], new: Sequence[NamedSpec]) -> list[str]:
    """Items of a list keyed by name (tools, guardrails, knowledge bases)."""
    before = {item.name: item for item in old}
    after = {item.name: item for item in new}
    lines = [f"added: {item.name}" for item in new if item.name not in before]
    lines += [f"removed: {item.name}" for item in old if item.name not in after]
    for item in new:
        if item.name in before and before[item.name] != item:
            lines.append(f"changed: {item.name}")
            lines += [
                INDENT + line for line in value_changes(_plain(before[item.name]), _plain(item))
            ]
    kept_before = [item.name for item in old if item.name in after]
    kept_after = [item.name for item in new if item.name in before]
    if kept_before != kept_after:
        lines.append(f"order: {', '.join(kept_before)} → {', '.join(kept_after)}")
    return lines


def _plain(model: BaseModel) -> dict[str, Any]:
    plain = model.model_dump(mode="json")
    if isinstance(model, ToolSpec) and model.approval is None:
        del plain["approval"]  # a policy added or removed reads as such, not as `null → {…}`
    return plain


def value_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Changes between two JSON values, by JSON path (``input_schema.properties.id.type``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(old.keys() | new.keys()):
            where = f"{path}.{key}" if path else str(key)
            if key not in old:
                lines += _whole(new[key], where, "added {}")
            elif key not in new:
                lines += _whole(old[key], where, "removed (was {})")
            else:
                lines += value_changes(old[key], new[key], where)
        return lines
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        lines = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            lines += value_changes(a, b, f"{path}.{index}" if path else str(index))
        return lines
    if _canonical(old) == _canonical(new):  # as the digest sees them: 1 ≠ 1.0, 0.0 ≠ -0.0
        return []
    return [f"{path or 'value'}: {_shown(old)} → {_shown(new)}"]


def _whole(value: Any, path: str, how: str) -> list[str]:
    """An object added or removed whole: one line per member (an approval policy reads as
    its fields), anything else on one line."""
    if isinstance(value, dict) and value:
        return [line for key in sorted(value) for line in _whole(value[key], f"{path}.{key}", how)]
    return [f"{path}: {how.format(_shown(value))}"]


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if len(text) <= MAX_VALUE_CHARS:
        return text
    return f"{text[: MAX_VALUE_CHARS - 1]}… ({len(text):,} characters)"
