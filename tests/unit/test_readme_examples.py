"""The README's judge example runs as written and reaches the decision it describes."""

from __future__ import annotations

import re
from pathlib import Path

from streams.detector import Verdict

README = Path(__file__).resolve().parents[2] / "README.md"


def python_block(containing: str) -> str:
    blocks: list[str] = re.findall(
        r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL
    )
    (block,) = [b for b in blocks if containing in b]
    return block


def test_readme_judge_example_rolls_back_the_worse_canary() -> None:
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(python_block("CanaryJudge"), str(README), "exec"), namespace)
    decision = namespace["decision"]
    assert getattr(decision, "verdict", None) is Verdict.ROLLBACK
