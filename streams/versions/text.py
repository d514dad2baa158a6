"""Versions as text for a terminal: the list of an agent's versions, one version in full.
Pure: versions in, lines out. Every line passes :func:`printable` before it is printed."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Final

from schemas.trace import UNPRINTABLE
from schemas.version import AgentVersion
from streams.versions.diff import INDENT

DESCRIPTION_CHARS: Final = 60
_UNPRINTABLE = re.compile(f"[{UNPRINTABLE}]")


def printable(line: str) -> str:
    """``line`` with control characters (a prompt may hold a terminal escape sequence) and
    bidirectional overrides shown as escapes instead of acting on the terminal."""
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode(), line)


def version_table(versions: Sequence[AgentVersion]) -> list[str]:
    """One line per version, oldest first."""
    rows = [("VERSION", "DIGEST", "CREATED", "BY", "DESCRIPTION")]
    for version in versions:
        summary = version.description.strip().splitlines()[0] if version.description else ""
        if len(summary) > DESCRIPTION_CHARS:
            summary = summary[: DESCRIPTION_CHARS - 1] + "…"
        rows.append(
            (
                version.version,
                version.digest[: len("sha256:") + 12],
                version.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                version.created_by,
                summary,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def version_details(version: AgentVersion) -> list[str]:
    """Everything a version holds, prompts in full."""
    bundle = version.bundle
    lines = [
        f"{version.agent} {version.version}",
        f"digest: {version.digest}",
        f"created: {version.created_at.isoformat(timespec='seconds')} by {version.created_by}",
    ]
    if version.description:
        lines += ["description:", *_indented(version.description)]
    lines.append(f"model: {bundle.model.provider} {bundle.model.model}")
    lines += [f"{INDENT}{name}: {_json(value)}" for name, value in bundle.model.parameters.items()]
    if bundle.prompts:
        lines.append("prompts:")
        for name, text in bundle.prompts.items():
            lines += [f"{INDENT}{name}:", *_indented(text, 2)]
    if bundle.tools:
        lines.append("tools:")
        for tool in bundle.tools:
            lines.append(f"{INDENT}{tool.name}: {tool.description}".rstrip())
            if tool.input_schema:
                lines.append(f"{INDENT * 2}input_schema: {_json(tool.input_schema)}")
    if bundle.guardrails:
        lines.append("guardrails:")
        lines += [f"{INDENT}{g.name} ({g.kind}) {_json(g.config)}" for g in bundle.guardrails]
    if bundle.knowledge_bases:
        lines.append("knowledge_bases:")
        for kb in bundle.knowledge_bases:
            revision = f" @ {kb.revision}" if kb.revision else ""
            lines.append(f"{INDENT}{kb.name}: {kb.uri}{revision}")
    if bundle.extra:
        lines.append(f"extra: {_json(bundle.extra)}")
    return lines


def _indented(text: str, depth: int = 1) -> list[str]:
    return [f"{INDENT * depth}{line}".rstrip() for line in text.splitlines()]


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
