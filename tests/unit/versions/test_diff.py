"""The diff a person reads, and versions as terminal text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from schemas.version import AgentVersion, GuardrailSpec, KnowledgeBaseRef, ToolSpec, bundle_digest
from streams.versions.diff import MAX_VALUE_CHARS, diff_versions, value_changes
from streams.versions.load import parse_version_file
from streams.versions.text import printable, version_details, version_table

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "versions"
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def example(label: str) -> AgentVersion:
    path = EXAMPLES / f"support-bot-{label}.yaml"
    return parse_version_file(path.read_bytes(), str(path)).as_version(AT, "alice")


def changed(base: AgentVersion, **bundle: object) -> AgentVersion:
    new_bundle = base.bundle.model_copy(update=bundle)
    return base.model_copy(
        update={"version": "v9", "bundle": new_bundle, "digest": bundle_digest(new_bundle)}
    )


def test_the_example_diff_reads_line_by_line() -> None:
    v1, v2 = example("v1"), example("v2")
    lines = diff_versions(v1, v2)
    assert lines[0] == "support-bot v1 → v2"
    assert lines[1] == f"digest {v1.digest} → {v2.digest}"
    expected_in_order = [
        "prompts:",
        "  changed: system",
        "    --- v1/system",
        "    +++ v2/system",
        "    -Answer in the customer's language, in at most three sentences.",
        "    +Answer in the customer's language, in at most two sentences.",
        "    +Offer a refund only through issue_refund, never in words alone.",
        "model:",
        '  model: "gpt-4o-mini" → "gpt-4o"',
        "  parameters.temperature: 0.2 → 0.1",
        "tools:",
        "  added: issue_refund",
        "  changed: lookup_order",
        '    input_schema.properties.order_id.pattern: "^[0-9]{8}$" → "^[0-9]{8,10}$"',
        "knowledge_bases:",
        "  changed: help-center",
        '    revision: "2026-11-30" → "2026-12-01"',
    ]
    positions = [lines.index(line) for line in expected_in_order]
    assert positions == sorted(positions)
    assert not any(line.startswith(("guardrails", "extra")) for line in lines)
    assert "  changed: escalation" not in lines


def test_the_same_content_says_so() -> None:
    v1 = example("v1")
    described = v1.model_copy(update={"version": "v1b", "description": "again"})
    assert diff_versions(v1, described) == [
        "support-bot v1 → v1b",
        f"same content (digest {v1.digest})",
        f"description: {value_changes(v1.description, 'again')[0].partition(': ')[2]}",
    ]


def test_prompts_tools_guardrails_and_knowledge_bases_added_removed_reordered() -> None:
    v1 = example("v1")
    tools = (ToolSpec(name="b"), ToolSpec(name="a"))
    before = changed(v1, tools=tools).model_copy(update={"version": "v8"})
    after = changed(
        v1,
        prompts={"system": v1.bundle.prompts["system"], "followup": "one\ntwo"},
        tools=(tools[1], tools[0], ToolSpec(name="c", description="new")),
        guardrails=(GuardrailSpec(name="toxicity", kind="classifier", config={"limit": 0.8}),),
        knowledge_bases=(KnowledgeBaseRef(name="faq", uri="s3://faq"),),
        extra={},
    )
    lines = diff_versions(before, after)
    for expected in [
        "  added: followup (2 lines)",
        "  removed: escalation (1 line)",
        "  added: c",
        "  order: b, a → a, b",
        "guardrails:",
        "  added: toxicity",
        "  removed: pii",
        "  added: faq",
        "  removed: help-center",
        '  owner: removed (was "support-team")',
    ]:
        assert expected in lines


def test_nested_values_change_by_json_path_and_long_values_are_cut() -> None:
    old = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
    new = {"type": "object", "properties": {"id": {"type": "integer"}, "n": {}}, "required": []}
    assert value_changes(old, new) == [
        'properties.id.type: "string" → "integer"',
        "properties.n: added {}",
        'required: ["id"] → []',
    ]
    assert value_changes(1, 1.0) == ["value: 1 → 1.0"]
    long = "x" * 500
    (line,) = value_changes({"p": "short"}, {"p": long})
    assert line.endswith("… (502 characters)")
    assert len(line) < MAX_VALUE_CHARS + 40


def test_terminal_control_characters_are_shown_not_obeyed() -> None:
    assert printable("red \x1b[31mtext\x07 \u202e") == "red \\x1b[31mtext\\x07 \\u202e"
    assert printable("a\tb\r\x00") == "a\\tb\\r\\x00"
    assert printable("ünïcödé → ok") == "ünïcödé → ok"


def test_show_and_list_hold_every_part() -> None:
    v1, v2 = example("v1"), example("v2")
    details = version_details(v1)
    for expected in [
        "support-bot v1",
        f"digest: {v1.digest}",
        "created: 2026-12-01T12:00:00+00:00 by alice",
        "model: openai gpt-4o-mini",
        "  temperature: 0.2",
        "    Use lookup_order before you say anything about an order.",
        "  lookup_order: Find an order by its number.",
        '  pii (redaction) {"entities": "email,phone"}',
        "  help-center: s3://acme-kb/help-center @ 2026-11-30",
        'extra: {"owner": "support-team"}',
    ]:
        assert expected in details
    header, first, second = version_table([v1, v2])
    assert header.split() == ["VERSION", "DIGEST", "CREATED", "BY", "DESCRIPTION"]
    assert first.split()[:7] == [
        "v1",
        v1.digest[:19],
        "2026-12-01",
        "12:00:00",
        "alice",
        "The",
        "first",
    ]
    assert header.index("DIGEST") == first.index("sha256:")
    assert second.endswith("…")


def test_differences_only_the_digest_sees_are_still_shown() -> None:
    assert value_changes({"t": 0.0}, {"t": -0.0}) == ["t: 0.0 → -0.0"]
    assert value_changes([1, True], [1, True]) == []
    v1 = example("v1")
    crlf = changed(
        v1,
        prompts={**v1.bundle.prompts, "escalation": "Apologise once and offer a human agent.\r\n"},
    )
    assert diff_versions(v1, crlf)[-2:] == [
        "  changed: escalation",
        "    (only line endings or the final newline differ)",
    ]
