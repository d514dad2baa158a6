"""The fold of ``coalmine.versions`` every reader shares: the first record of a label is the
version, a repeat changes nothing, other content is a conflict, junk is skipped; and the
registration decision."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.version import AgentBundle, AgentVersion, ModelSpec, bundle_digest
from streams.sdk.compacted import Record
from streams.versions.catalog import (
    Decision,
    VersionCatalog,
    VersionNotFoundError,
    conflict_message,
    decide,
)

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def version(
    label: str = "v1", model: str = "gpt-4o", agent: str = "support-bot", by: str = "alice"
) -> AgentVersion:
    bundle = AgentBundle(model=ModelSpec(provider="openai", model=model))
    return AgentVersion(
        agent=agent,
        version=label,
        digest=bundle_digest(bundle),
        created_at=AT,
        created_by=by,
        bundle=bundle,
    )


def record(offset: int, v: AgentVersion | None = None, key: bytes | None = None) -> Record:
    value = None if v is None else v.model_dump_json().encode()
    return Record(
        "versions", key if key is not None or v is None else v.key.encode(), value, 0, offset
    )


def test_the_decision_compares_digests_only() -> None:
    first = version()
    assert decide(None, first) is Decision.NEW
    assert decide(first, version(by="bob")) is Decision.SAME
    assert decide(first, version(model="gpt-4o-mini")) is Decision.CONFLICT


def test_a_conflict_names_both_digests_in_one_line() -> None:
    first, other = version(), version(model="gpt-4o-mini")
    message = conflict_message(first, other.digest)
    assert first.digest in message
    assert other.digest in message
    assert "\n" not in message


def test_the_first_record_of_a_label_is_the_version_everywhere() -> None:
    first, repeat, other = version(), version(by="bob"), version(model="gpt-4o-mini", by="eve")
    catalog = VersionCatalog.of([record(0, first), record(1, repeat), record(2, other)])
    assert catalog.get("support-bot", "v1") == first
    assert catalog.offsets == {"support-bot/v1": 0}
    assert [(c.kept_digest, c.refused_digest, c.offset) for c in catalog.conflicts] == [
        (first.digest, other.digest, 2)
    ]
    # A reader that saw the other content first keeps it: the order on the topic decides.
    assert VersionCatalog.of([record(0, other), record(1, first)]).get("support-bot", "v1") == other


def test_tombstones_junk_and_misfiled_records_are_skipped_with_a_reason() -> None:
    good = version()
    catalog = VersionCatalog.of(
        [
            Record("versions", b"support-bot/v1", None, 0, 0),
            Record("versions", b"support-bot/v1", b"{not json", 0, 1),
            record(2, good, key=b"support-bot/v9"),
            Record(
                "versions",
                b"x",
                good.model_dump_json().replace(good.digest[-4:], "0000").encode(),
                0,
                3,
            ),
            record(4, good),
        ]
    )
    assert catalog.get("support-bot", "v1") == good
    reasons = [(s.offset, s.reason) for s in catalog.skipped]
    assert reasons[0] == (0, "a tombstone (versions are never deleted)")
    assert reasons[1][1].startswith("not an agent version: ")
    assert reasons[2] == (
        2,
        "its key b'support-bot/v9' is not 'support-bot/v1', the key of its value",
    )
    assert "is not the bundle's digest" in reasons[3][1]


def test_an_agents_versions_come_in_registration_order() -> None:
    records = [
        record(i, version(label, agent=agent))
        for i, (agent, label) in enumerate(
            [("support-bot", "v10"), ("other", "v1"), ("support-bot", "v2")]
        )
    ]
    catalog = VersionCatalog.of(records)
    assert [v.version for v in catalog.of_agent("support-bot")] == ["v10", "v2"]
    assert catalog.of_agent("nobody") == []


def test_unknown_agents_and_versions_are_named() -> None:
    catalog = VersionCatalog.of([record(0, version("v1")), record(1, version("v2"))])
    with pytest.raises(VersionNotFoundError, match="no versions of agent 'x' are registered"):
        catalog.require("x", "v1")
    with pytest.raises(
        VersionNotFoundError, match=r"agent 'support-bot' has no version 'v3' \(latest: v1, v2\)"
    ):
        catalog.require("support-bot", "v3")


def test_a_key_names_one_version_even_when_the_agent_name_holds_a_slash() -> None:
    # "a/b" + "c" and "a" + "b/c" would share the key "a/b/c": labels may not hold "/".
    assert version("c", agent="a/b").key == "a/b/c"
    with pytest.raises(ValidationError, match="version"):
        version("b/c", agent="a")


def test_a_record_whose_digest_is_not_its_bundles_is_refused() -> None:
    good = version()
    with pytest.raises(ValidationError, match="is not the bundle's digest"):
        AgentVersion.model_validate({**good.model_dump(), "digest": "sha256:" + "0" * 64})
