"""The operator side without a broker: plan files, command fields, one-line descriptions and
the tables read from the compacted topics."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from schemas.command import CommandAction
from schemas.deployment import Phase
from streams.controller.client import MAX_PLAN_BYTES, describe, load_plan, new_command
from streams.controller.records import load_states
from streams.errors import CoalmineError
from tests.unit.controller.test_machine import STATES, T0


def test_a_plan_from_json_or_yaml(tmp_path: Path) -> None:
    as_json = tmp_path / "plan.json"
    as_json.write_text('{"steps": [{"weight": 0.1, "min_duration_s": 60}, {"weight": 1}]}')
    as_yaml = tmp_path / "plan.yaml"
    as_yaml.write_text(
        "steps:\n  - weight: 0.1\n    min_duration_s: 60\n  - weight: 1\n"
        "eval_gate:\n  min_cases: 50\n  min_quality: 0.8\n"
    )
    assert load_plan(as_json).steps == load_plan(as_yaml).steps
    gate = load_plan(as_yaml).eval_gate
    assert gate is not None and (gate.min_cases, gate.min_quality) == (50, 0.8)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"steps": []}', "steps: Tuple should have at least 1 item"),
        ('{"steps": [{"weight": 0.5}, {"weight": 0.2}]}', "step weights must grow strictly"),
        ('{"steps": [{"weight": NaN}]}', "plan.json: NaN is not a number JSON allows"),
        ('{"steps": [{"weight": 0.5, "wait": 3}]}', "steps.0.wait: unknown field"),
        ('{"steps": [{"weight": 0.5}], "steps": []}', "the key 'steps' appears twice"),
        ("{", "not valid JSON"),
        ("[1, 2]", "the file must hold a mapping of fields"),
    ],
)
def test_a_bad_plan_is_one_line_naming_the_problem(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(CoalmineError) as caught:
        load_plan(path)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_plan_file_that_is_missing_or_too_large(tmp_path: Path) -> None:
    with pytest.raises(CoalmineError, match=r"cannot read .*missing\.json: No such file"):
        load_plan(tmp_path / "missing.json")
    huge = tmp_path / "huge.json"
    huge.write_text(" " * (MAX_PLAN_BYTES + 1))
    with pytest.raises(CoalmineError, match="the file is over 65,536 bytes"):
        load_plan(huge)


def test_a_command_with_a_bad_field_is_one_line() -> None:
    with pytest.raises(CoalmineError, match=r"^agent: String should match pattern"):
        new_command("bad\nagent", CommandAction.PAUSE, issued_by="me")
    command = new_command("bot", CommandAction.PROMOTE, issued_by="me", full=True)
    assert command.id.startswith("cli-") and command.full


def test_describe_says_phase_versions_weight_step_and_generation() -> None:
    canary = STATES["canary"]
    assert canary is not None
    assert describe(canary, T0 + timedelta(seconds=42)) == (
        "bot canary, stable v1, canary v2 at 10% (step 1/3, 42 s in it), generation 2"
    )
    promoted = STATES["promo"]
    assert promoted is not None and promoted.phase is Phase.PROMOTED
    assert describe(promoted) == "bot promoted, stable v2, generation 3"


def test_tables_skip_what_does_not_parse() -> None:
    canary = STATES["canary"]
    assert canary is not None
    table = {b"bot": canary.model_dump_json().encode(), b"junk": b"{", b"gone": None}
    assert load_states(table) == {"bot": canary}


def test_the_readme_plan_example_is_a_valid_plan(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```yaml\n(steps:.*?)```", readme, re.DOTALL)
    path = tmp_path / "plan.yaml"
    path.write_text(example)
    plan = load_plan(path)
    assert [s.weight for s in plan.steps] == [0.05, 0.25, 0.5, 1.0]
    assert plan.steps[1].approval and plan.steps[2].require_pass
    assert plan.eval_gate is not None and plan.eval_gate.min_cases == 200
    for phase in Phase:
        assert f"`{phase.value}`" in readme
