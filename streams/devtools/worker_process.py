"""``coalmine worker`` as a child process: started, awaited, signalled, queried.

The demo runs its worker this way, and the integration tests use it to crash and restart one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from streams import sqlcli
from streams.errors import CoalmineError
from streams.settings import Settings

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0


class WorkerProcess:
    """One worker process with the given settings, its output appended to ``log_path``."""

    def __init__(
        self, settings: Settings, log_path: Path, command: Sequence[str] = ("streams.cli", "worker")
    ) -> None:
        """``command``: the module to run with ``python -m`` and its arguments."""
        self.settings = settings
        self.log_path = log_path
        self.command = tuple(command)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the worker and return once its web server answers."""
        env = {**os.environ, **self.settings.as_env()}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", *self.command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal reaches only the parent, which
                # then stops the worker itself, before the broker the worker depends on.
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            # Ctrl-C or SIGTERM while waiting: no ``with`` block owns the worker yet.
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                self._process = None
                raise CoalmineError(f"the worker exited while starting:\n{self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.2)
        self.kill()
        raise CoalmineError(
            f"the worker did not start in {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}"
        )

    def answers(self) -> bool:
        """Whether the started process is ready: the worker's web server answers."""
        return sqlcli.worker_answers(self.settings.worker_url)

    def wait_exit(self, timeout_s: float) -> int | None:
        """The exit code once the worker stops by itself within ``timeout_s``, else ``None``."""
        if self._process is None:
            return None
        try:
            code = self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit, as in a crash."""
        self._signal(signal.SIGKILL)

    def stop(self) -> int:
        """SIGTERM, then wait for the clean exit; returns the exit code."""
        return self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> int:
        process, self._process = self._process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signum)
        try:
            return process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise CoalmineError(f"the worker ignored signal {signum} and was killed") from None

    def cpu_seconds(self) -> float:
        """CPU time the worker process has used so far (all its threads, user + system)."""
        if self._process is None:
            return 0.0
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rpartition(")")[2].split()
        # utime and stime: fields 14 and 15 of proc(5), counted after the command name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def sql(self, query: str) -> list[Sequence[Any]]:
        """Read-only SQL through the worker, which holds the embedded database."""
        return sqlcli.fetch(self.settings, query)[1]

    def scalar(self, query: str) -> Any:
        return self.sql(query)[0][0]

    def health(self) -> dict[str, Any]:
        """The worker's ``/health`` document: status and ingest counters."""
        with urllib.request.urlopen(f"{self.settings.worker_url}/health", timeout=10) as reply:
            document: dict[str, Any] = json.loads(reply.read())
        return document
