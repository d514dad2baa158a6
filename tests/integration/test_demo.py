"""``coalmine demo`` closes the loop, as a newcomer runs it: the bad
canary is rolled back by the detector's RollbackCommand and every router moves off it, the
good canary is promoted step by step, and the timelines from SQL say the same."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.integration.harness import isolated_settings

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S = 420.0


def test_the_demo_rolls_the_bad_canary_back_and_promotes_the_good_one(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--duration", "180"],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr

    def first(pattern: str) -> int:
        found = re.search(pattern, out, re.MULTILINE)
        assert found, f"no {pattern!r} in:\n{out}"
        return found.start()

    # The bad canary: deployed, failing, alerted, rolled back by the detector, routers moved.
    story = [
        first(r"support-bot: v13 deployed"),
        first(r"support-bot: v13 starts failing"),
        first(r"support-bot: ALERT canary_regression"),
        first(r"support-bot: RollbackCommand from the detector"),
        first(r"support-bot: controller, generation \d+: rolled_back \(rollback, by detector\)"),
        first(r"support-bot: all 4 routers serve v12 again: [\d.]+ s after the deploy, [\d.]+ s "
              r"after the bad behaviour began"),
    ]  # fmt: skip
    assert story == sorted(story)
    # The good canary: PASS, then promoted by its last step; never rolled back.
    good = [
        first(r"research-agent: v8 deployed"),
        first(r"research-agent: judge says PASS"),
        first(r"research-agent: controller, generation \d+: promoted \(step\): v8 is the stable"),
    ]
    assert good == sorted(good)
    assert "research-agent: RollbackCommand" not in out
    # The timelines from SQL: the rollback request and the rollback; the steps and promotion.
    timelines = out[first(r"support-bot v13: the deployment's timeline") :]
    bad_timeline, good_timeline = timelines.split("research-agent v8: the deployment's timeline")
    assert re.search(r"rollback\s+requested\s+v13", bad_timeline)
    assert re.search(r"deployment\s+rollback\s+v13\s+0\s", bad_timeline)
    assert re.search(r"judgement\s+pass\s+v8", good_timeline)
    assert re.search(r"canary -> promoted, stable v8", good_timeline)
    assert re.search(r"^support-bot\s+v13\s+\d+", out, re.MULTILINE)  # the per-version table
