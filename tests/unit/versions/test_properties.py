"""Properties of digests and diffs over generated bundles (Hypothesis)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.version import AgentBundle, AgentVersion, ModelSpec, ToolSpec, bundle_digest
from streams.versions.diff import diff_versions
from streams.versions.load import parse_version_file

names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=20),
)
bundles = st.builds(
    AgentBundle,
    prompts=st.dictionaries(names, st.text(max_size=200), max_size=4),
    model=st.builds(
        ModelSpec,
        provider=st.sampled_from(["openai", "anthropic"]),
        model=names,
        parameters=st.dictionaries(names, scalars, max_size=4),
    ),
    tools=st.lists(
        st.builds(
            ToolSpec,
            name=names,
            description=st.text(max_size=40),
            input_schema=st.dictionaries(names, scalars, max_size=3),
        ),
        max_size=3,
        unique_by=lambda tool: tool.name,
    ).map(tuple),
    extra=st.dictionaries(names, scalars, max_size=3),
)


def shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


def as_version(bundle: AgentBundle, label: str) -> AgentVersion:
    return AgentVersion(
        agent="bot",
        version=label,
        digest=bundle_digest(bundle),
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        created_by="hypothesis",
        bundle=bundle,
    )


@settings(max_examples=200, deadline=None)
@given(bundles, st.integers(0, 2**32))
def test_a_file_in_any_key_order_has_the_digest_of_its_bundle(
    bundle: AgentBundle, seed: int
) -> None:
    document = {"agent": "bot", "version": "v1", **json.loads(bundle.model_dump_json())}
    text = json.dumps(shuffled(document, random.Random(seed)))
    loaded = parse_version_file(text.encode(), "bot.json")
    assert loaded.bundle == bundle
    assert loaded.digest == bundle_digest(bundle)


@settings(max_examples=200, deadline=None)
@given(bundles, bundles)
def test_a_diff_says_same_content_exactly_when_the_digests_agree(
    old: AgentBundle, new: AgentBundle
) -> None:
    lines = diff_versions(as_version(old, "a"), as_version(new, "b"))
    same = bundle_digest(old) == bundle_digest(new)
    assert lines[1].startswith("same content") is same
    assert (len(lines) > 2) is not same  # a change in content shows as at least one line
