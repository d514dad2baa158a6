"""The SDK as an agent installs it: the wheel without extras, in a fresh virtualenv, publishing
to the session's broker without a single library of the worker's installed or imported.

Building the virtualenv costs 30-60 s (pip fetches pydantic and confluent-kafka, or takes them
from its cache), so the module builds it once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from schemas.topics import TRACES
from streams.cli import WORKER_EXTRA_MODULES
from streams.settings import Settings
from tests.integration.harness import consume_all, isolated_settings
from tests.unit.test_packaging import extra

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

AGENT = textwrap.dedent(
    """
    import dataclasses, importlib.metadata, json, sys

    import streams
    from streams.sdk import KafkaPublisher, SdkSettings, Tracer

    with KafkaPublisher.from_settings(SdkSettings.from_env()) as publisher:
        tracer = Tracer("wheel-agent", "v1", publisher)
        with tracer.request("from-the-wheel", tenant="acme") as request:
            request.set_outcome(task_completed=True, quality_score=0.5)
        publisher.flush(30)
    worker_modules = set(sys.argv[1].split(","))
    print(json.dumps({
        "streams": streams.__file__,
        "stats": dataclasses.asdict(publisher.stats),
        "imported": sorted(m for m in sys.modules if m.split(".")[0] in worker_modules),
        "installed": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
    }))
    """
)


def clean_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without anything that would let the venv see this checkout
    or this session's settings, plus ``settings``."""
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("COALMINE_")
    }
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **settings}


def run(
    command: Sequence[str | Path], env: Mapping[str, str], cwd: Path, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel of this checkout installed without extras; its bin/."""
    root = tmp_path_factory.mktemp("sdk-wheel")
    env = clean_env({})
    # hatchling comes with the dev extra: no build environment to fetch.
    build = ["wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(root), str(ROOT)]
    run([sys.executable, "-m", "pip", *build], env, root)
    (wheel,) = root.glob("coalmine-*.whl")
    run([sys.executable, "-m", "venv", root / "venv"], env, root)
    bin_dir = root / "venv" / "bin"
    run([bin_dir / "python", "-m", "pip", "install", "--quiet", wheel], env, root)
    return bin_dir


def test_an_agent_with_the_sdk_alone_publishes_and_loads_nothing_of_the_worker(
    sdk_venv: Path, kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    script = tmp_path / "agent.py"  # not in the checkout: `streams` must come from the wheel
    script.write_text(AGENT)
    worker_modules = ",".join(sorted(WORKER_EXTRA_MODULES))
    out = run([sdk_venv / "python", script, worker_modules], clean_env(settings.as_env()), tmp_path)
    report = json.loads(out.stdout)

    assert Path(report["streams"]).is_relative_to(sdk_venv.parent)
    assert report["imported"] == []
    installed = {canonicalize_name(name) for name in report["installed"]}
    assert {"confluent-kafka", "pydantic"} <= installed
    assert extra("worker") & installed == set()
    assert report["stats"] == {"published": 1, "delivered": 1, "failed": 0, "dropped": 0}
    (message,) = consume_all(settings.kafka_bootstrap, settings.topic(TRACES), expected=1)
    span = json.loads(message.value() or b"")
    assert (span["agent"], span["name"], span["tenant"]) == (
        "wheel-agent",
        "from-the-wheel",
        "acme",
    )


def refused_in_one_line(coalmine: Path, env: dict[str, str], cwd: Path, command: list[str]) -> str:
    """The one stderr line of ``coalmine COMMAND``, which must exit 2."""
    refused = run([coalmine, *command], env, cwd, check=False)
    assert refused.returncode == 2, refused.stderr
    (line,) = refused.stderr.splitlines()
    return line


def test_the_command_line_without_the_worker_extra_says_how_to_get_it(
    sdk_venv: Path, tmp_path: Path
) -> None:
    coalmine, env = sdk_venv / "coalmine", clean_env({})
    shown = run([coalmine, "--help"], env, tmp_path)
    assert shown.stderr == ""
    assert "worker" in shown.stdout

    for command in (["worker"], ["migrate"], ["sql", "SELECT 1"], ["bench", "ingest"]):
        line = refused_in_one_line(coalmine, env, tmp_path, command)
        assert line.startswith(f"coalmine: error: `coalmine {command[0]}` needs the worker extra")
        assert line.endswith("pip install 'coalmine[worker]'")


def test_the_receiver_without_the_otlp_extra_says_how_to_get_it(
    sdk_venv: Path, tmp_path: Path
) -> None:
    coalmine, env = sdk_venv / "coalmine", clean_env({})
    for command in (["otlp"], ["bench", "otlp"]):
        line = refused_in_one_line(coalmine, env, tmp_path, command)
        assert line.startswith(f"coalmine: error: `coalmine {' '.join(command)}` needs the otlp")
        assert line.endswith("pip install 'coalmine[otlp]'")


def test_version_files_in_json_need_no_extra_and_yaml_ones_say_how_to_get_it(
    sdk_venv: Path, tmp_path: Path
) -> None:
    coalmine, env = sdk_venv / "coalmine", clean_env({})
    (tmp_path / "bot.json").write_text('{"agent": "a", "version": "v1"}')
    (tmp_path / "bot.yaml").write_text("agent: a\nversion: v1\n")
    checked = run([coalmine, "versions", "register", "bot.json"], env, tmp_path, check=False)
    assert checked.returncode == 2
    assert checked.stderr == "coalmine: error: bot.json: model: required\n"
    yaml = run([coalmine, "versions", "register", "bot.yaml"], env, tmp_path, check=False)
    assert yaml.returncode == 2
    assert yaml.stderr.startswith("coalmine: error: `coalmine versions` needs the worker extra")


def test_the_wheel_ships_the_status_page_and_its_chart_library(sdk_venv: Path) -> None:
    """The worker serves these from the installed package (importlib.resources)."""
    listing = textwrap.dedent(
        """
        from importlib import resources
        static = resources.files("streams.statuspage") / "static"
        print("\\n".join(str(p.relative_to(static)) for p in static.rglob("*") if p.is_file()))
        """
    )
    found = run([sdk_venv / "python", "-c", listing], clean_env({}), sdk_venv).stdout.split()
    assert {
        "index.html", "page.js", "page.css", "vendor/uplot/uPlot.iife.min.js",
        "vendor/uplot/uPlot.min.css", "vendor/uplot/LICENSE", "vendor/uplot/VERSION",
    } <= set(found), found  # fmt: skip
