"""Who holds the chDB folder: the process holding the owner file's lock, alive or not by pid."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.errors import ClickHouseUnavailableError
from streams.settings import Settings
from streams.storage import clickhouse


def settings_in(tmp_path: Path) -> Settings:
    return Settings(clickhouse_url=f"chdb://{tmp_path / 'chdb'}")


def test_nobody_holds_a_folder_without_an_owner_file(tmp_path: Path) -> None:
    assert clickhouse.embedded_owner_url(settings_in(tmp_path)) is None


def test_a_claim_names_the_url_until_it_is_released(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    claim = clickhouse.claim_embedded(settings, "http://127.0.0.1:6066")
    assert clickhouse.embedded_owner_url(settings) == "http://127.0.0.1:6066"
    with pytest.raises(ClickHouseUnavailableError, match=re.escape("http://127.0.0.1:6066")):
        clickhouse.claim_embedded(settings, "http://127.0.0.1:6067")
    claim.release()
    assert clickhouse.embedded_owner_url(settings) is None
    clickhouse.claim_embedded(settings, "http://127.0.0.1:6067").release()


def test_a_file_naming_a_live_pid_without_its_lock_is_stale(tmp_path: Path) -> None:
    # A recycled pid: the file of a crashed worker names a process that is alive (this one).
    settings = settings_in(tmp_path)
    record = {"pid": os.getpid(), "url": "http://127.0.0.1:6066"}
    clickhouse.owner_file(settings).write_text(json.dumps(record))
    assert clickhouse.embedded_owner_url(settings) is None


HOLDER = """
import sys, time
from streams.storage import clickhouse
from streams.settings import Settings
clickhouse.claim_embedded(Settings(clickhouse_url=sys.argv[1]), "http://127.0.0.1:6066")
print("claimed", flush=True)
time.sleep(60)
"""


def test_a_killed_holder_frees_the_folder_before_it_is_reaped(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, settings.clickhouse_url], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"claimed\n"
        assert clickhouse.embedded_owner_url(settings) == "http://127.0.0.1:6066"
        holder.send_signal(signal.SIGKILL)  # and not reaped: a zombie until wait() below
        assert wait_until_zombie(holder.pid)
        os.kill(holder.pid, 0)  # a zombie still answers to its pid: why a pid check failed
        assert clickhouse.embedded_owner_url(settings) is None
        clickhouse.claim_embedded(settings, "http://127.0.0.1:6067").release()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def wait_until_zombie(pid: int, timeout_s: float = 10.0) -> bool:
    """Wait until ``pid`` is dead but not reaped: every thread gone, its entry left (Z)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # /proc/<pid>/stat: "pid (comm) state ...": the state after the last parenthesis
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z" and os.listdir(f"/proc/{pid}/task") == [str(pid)]:
            return True
        time.sleep(0.01)
    return False
