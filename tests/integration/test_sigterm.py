"""SIGTERM of ``coalmine demo`` or ``coalmine bench ingest`` stops the worker it started, as
Ctrl-C does, also while that worker is still starting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.integration.harness import isolated_settings

pytestmark = pytest.mark.integration

STARTED_TIMEOUT_S = 180.0


def worker_children(pid: int) -> list[int]:
    """Live child processes of ``pid`` running a Coalmine worker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        if int(parent) == pid and state != "Z" and b"worker" in cmdline:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    ("command", "when"),
    [
        (["demo", "--duration", "300", "--rate", "5"], "worker starting"),
        (["demo", "--duration", "300", "--rate", "5"], "worker ready"),
        (["bench", "ingest", "--events", "200"], "worker starting"),
    ],
    ids=["demo-starting", "demo-running", "bench-starting"],
)
def test_sigterm_leaves_no_worker_behind(
    kafka_settings: Settings, tmp_path: Path, command: list[str], when: str
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    output = tmp_path / "command.log"
    with output.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *command],
            env={**os.environ, **settings.as_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + STARTED_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            workers = workers or worker_children(process.pid)
            if workers and (when == "worker starting" or when in output.read_text()):
                break
            time.sleep(0.05)
        assert workers, f"no worker started:\n{output.read_text()}"

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=90) == 128 + signal.SIGTERM, output.read_text()
        assert output.read_text().rstrip().endswith("coalmine: terminated")
        assert not [pid for pid in workers if running(pid)]
    finally:
        process.kill()
        process.wait()
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
