"""``coalmine bench incident``, one tiny real run: an incident whose canary turns very bad is
rolled back through the worker's detector and the controller, every router switches, and the
JSON says so in causal order (the judge's window, then the command, then the routers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.integration.harness import isolated_settings

pytestmark = pytest.mark.integration


def test_one_incident_is_rolled_back_and_timed_from_its_onset(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    result = tmp_path / "incident.json"
    run = subprocess.run(
        [
            sys.executable, "-m", "streams.cli", "bench", "incident",
            "--incidents", "1", "--agents", "1", "--canary-error-rates", "0.3",
            "--aa-incidents", "0", "--onset", "10", "--timeout", "90",
            "--processes", "1", "--routers", "1", "--judge-runs", "3", "--json", str(result),
        ],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads(result.read_text())

    [scenario] = document["scenarios"]
    assert scenario["scenario"] == "errors 1% -> 30%"
    assert (scenario["incidents"], scenario["rollbacks"]) == (1, 1)
    assert scenario["judge_runs"] == 3
    [incident] = document["incidents"]
    assert incident["agent"] == "support-bot"
    assert 0 < incident["decided_s"] <= incident["rollback_s"] <= incident["routers_s"]
    assert scenario["pipeline_p50_s"] == pytest.approx(
        incident["rollback_s"] - incident["decided_s"]
    )
    assert document["window_lag_s"]["windows"] > 0
    assert "| errors 1% -> 30% | 1 | 1 |" in run.stdout
