"""Version files: what is accepted becomes a bundle with a stable digest; anything ambiguous
is refused in one line naming the file and the place in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.version import MAX_BUNDLE_BYTES, AgentBundle, ModelSpec, ToolSpec, bundle_digest
from streams.versions.load import MAX_DEPTH, MAX_FILE_BYTES, VersionFileError, parse_version_file

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "versions"

MINIMAL = "agent: support-bot\nversion: v1\nmodel: {provider: openai, model: gpt-4o-mini}\n"


def parse_yaml(text: str) -> object:
    return parse_version_file(text.encode(), "bot.yaml")


def refusal(data: bytes | str, name: str = "bot.yaml") -> str:
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(VersionFileError) as caught:
        parse_version_file(raw, name)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: ")
    return message.removeprefix(f"{name}: ")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_example_files_load(path: Path) -> None:
    found = parse_version_file(path.read_bytes(), str(path))
    assert found.agent == "support-bot"
    assert found.bundle.prompts["system"].startswith("You are the support assistant")
    assert found.digest == bundle_digest(found.bundle)


def test_yaml_and_json_of_one_content_have_one_digest_whatever_the_key_order() -> None:
    yaml_file = parse_version_file((EXAMPLES / "support-bot-v1.yaml").read_bytes(), "v1.yaml")
    document = {
        "version": "v1",
        "agent": "support-bot",
        "description": "described otherwise: the description is not content",
        **json.loads(yaml_file.bundle.model_dump_json()),
    }
    reordered = dict(reversed(list(document.items())))
    json_file = parse_version_file(json.dumps(reordered, indent=2).encode(), "v1.json")
    assert json_file.bundle == yaml_file.bundle
    assert json_file.digest == yaml_file.digest


def test_defaults_written_out_or_left_out_give_one_digest() -> None:
    explicit = MINIMAL + "prompts: {}\ntools: []\nextra: {}\n"
    assert parse_version_file(explicit.encode(), "a.yaml").digest == (
        parse_version_file(MINIMAL.encode(), "b.yaml").digest
    )


def test_any_change_of_content_changes_the_digest() -> None:
    base = AgentBundle(model=ModelSpec(provider="openai", model="gpt-4o"))
    variants = [
        base.model_copy(update={"prompts": {"system": "Be brief."}}),
        base.model_copy(update={"prompts": {"system": "Be brief. "}}),
        base.model_copy(
            update={"model": ModelSpec(provider="openai", model="gpt-4o", parameters={"t": 0})}
        ),
        base.model_copy(
            update={"model": ModelSpec(provider="openai", model="gpt-4o", parameters={"t": 0.0})}
        ),
        base.model_copy(update={"tools": (ToolSpec(name="a"),)}),
        base.model_copy(update={"tools": (ToolSpec(name="a", input_schema={"type": "object"}),)}),
        base.model_copy(update={"extra": {"k": "v"}}),
    ]
    digests = {bundle_digest(b) for b in [base, *variants]}
    assert len(digests) == len(variants) + 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "agent: other\n", "the key 'agent' appears twice in one mapping (line 4"),
        (MINIMAL + "extra: {a: 1, a: 2}\n", "the key 'a' appears twice"),
        (MINIMAL + "tools: [{name: t, input_scheme: {}}]\n", "tools.0.input_scheme: unknown field"),
        (MINIMAL + "owner: me\n", "owner: unknown field"),
        (
            MINIMAL.replace("version: v1", "version: 1.10"),
            "version: should be text (quote it: '1.1')",
        ),
        (MINIMAL.replace("version: v1", "version: a/b"), "version: String should match pattern"),
        (MINIMAL.replace("agent: support-bot\n", ""), "agent: required"),
        ("agent: a\nversion: v1\n", "model: required"),
        (MINIMAL + "extra: {t: .nan}\n", "extra.t: nan is not a number JSON allows"),
        (MINIMAL + "extra: {t: -.inf}\n", "extra.t: -inf is not a number JSON allows"),
        (MINIMAL + "extra: {t: [1]}\n", "extra.t: should be text, a number, true/false or null"),
        (MINIMAL + "extra: {day: 2026-01-01}\n", "extra.day: a date is not a JSON value; quote it"),
        (MINIMAL + "extra: {1: x}\n", "extra: the key 1 is not text; quote it"),
        (MINIMAL + "prompts: {system: &p hi, other: *p}\n", "aliases (*name) are not accepted"),
        (MINIMAL + "model: gpt-4o\n", "the key 'model' appears twice"),
        ("agent: a\nversion: v1\nmodel: gpt-4o\n", "model: Input should be a valid dictionary"),
        (
            MINIMAL + "tools: [{name: t}, {name: t}]\n",
            "tools: the name 't' is used more than once",
        ),
        (MINIMAL + "prompts: [\n", "not valid YAML: "),
        ("- just\n- a list\n", "the file must hold a mapping of fields"),
        ("", "the file must hold a mapping of fields"),
        (MINIMAL + "extra: {a: {}, b: [}\n", "not valid YAML"),
    ],
)
def test_a_bad_yaml_file_is_refused_in_one_line(text: str, expected: str) -> None:
    assert expected in refusal(text)


def test_several_problems_are_counted_after_the_first() -> None:
    message = refusal(MINIMAL + "tools: [{name: t, a: 1, b: 2}]\n")
    assert message == "tools.0.a: unknown field (and 1 more problem)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"agent": "a", "agent": "b"}', "the key 'agent' appears twice in one object"),
        ('{"agent": NaN}', "NaN is not a number JSON allows"),
        ('{"agent": Infinity}', "Infinity is not a number JSON allows"),
        ('{"agent": "\\ud800"}', "agent: text holds a lone surrogate"),
        ('{"agent": ', "not valid JSON: Expecting value (line 1, column 11)"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than"),
    ],
)
def test_a_bad_json_file_is_refused_in_one_line(text: str, expected: str) -> None:
    assert expected in refusal(text, "bot.json")


def test_nesting_is_bounded() -> None:
    schema: dict[str, object] = {}
    for _ in range(MAX_DEPTH + 1):
        schema = {"items": schema}
    document = {
        "agent": "a",
        "version": "v1",
        "model": {"provider": "p", "model": "m"},
        "tools": [{"name": "t", "input_schema": schema}],
    }
    assert f"nested deeper than {MAX_DEPTH} levels" in refusal(json.dumps(document), "a.json")


def test_text_that_is_not_utf8_is_refused() -> None:
    data = MINIMAL.encode() + b"extra: {a: \xff}\n"
    at = data.index(b"\xff")
    assert refusal(data) == f"not UTF-8 text (byte {at})"


def test_sizes_are_bounded() -> None:
    assert refusal(b" " * (MAX_FILE_BYTES + 1)) == f"the file is over {MAX_FILE_BYTES:,} bytes"
    prompts = {f"p{i}": "x" * 90_000 for i in range(3)}
    document = {"agent": "a", "version": "v1", "model": {"provider": "p", "model": "m"}}
    message = refusal(json.dumps({**document, "prompts": prompts}), "big.json")
    assert message.endswith(f"bytes of canonical JSON; at most {MAX_BUNDLE_BYTES:,}")


def test_the_syntax_follows_the_file_name() -> None:
    assert refusal(MINIMAL, "bot.txt") == "a version file's name ends in .yaml, .yml or .json"
    assert "not valid JSON" in refusal(MINIMAL, "bot.json")
    assert parse_version_file(MINIMAL.encode(), "BOT.YML").version == "v1"


def test_the_readme_shows_the_example_file_as_it_is() -> None:
    readme = (EXAMPLES.parents[1] / "README.md").read_text(encoding="utf-8")
    example = (EXAMPLES / "support-bot-v1.yaml").read_text(encoding="utf-8")
    assert f"```yaml\n{example}```" in readme
