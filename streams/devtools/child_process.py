"""A ``coalmine ...`` command as a child process: started, awaited until ready, signalled.

The demo, the benchmarks and the integration tests run the worker, the OTLP receiver and the
controller this way (:mod:`~streams.devtools.worker_process`,
:mod:`~streams.devtools.otlp_process`, :mod:`~streams.devtools.controller_process`); each
subclass says only what its command is and when it is ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self, TypeVar

from streams.errors import CoalmineError
from streams.sdk.closing import ClosedOnExit
from streams.settings import Settings

STOP_TIMEOUT_S = 60.0
READY_POLL_S = 0.1


class ChildProcess(ClosedOnExit):
    """``python -m *command`` with ``settings`` in its environment, its output appended to
    ``log_path``. :meth:`start` returns once :meth:`ready` holds; the end of a ``with`` block
    stops it (SIGTERM, waited for). :meth:`start` may be called again after :meth:`kill`."""

    name = "process"
    """What error messages call it."""
    ready_timeout_s = 90.0

    def __init__(self, settings: Settings, log_path: Path, command: Sequence[str]) -> None:
        """``command``: the module to run with ``python -m`` and its arguments."""
        self.settings = settings
        self.log_path = log_path
        self.command = tuple(command)
        self._process: subprocess.Popen[bytes] | None = None

    def ready(self) -> bool:
        """Whether the started process is ready; polled until it is."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def start(self) -> None:
        """Start the process and return once it is ready; raise (having killed it) if it
        exits first or is not ready within :attr:`ready_timeout_s`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", *self.command],
                env={**os.environ, **self.settings.as_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal reaches only the parent, which
                # then stops the child itself, before the broker the child depends on.
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            # Ctrl-C or SIGTERM while waiting: no ``with`` block owns the child yet.
            self.kill()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while not self.ready():
            if not self.alive():
                raise CoalmineError(f"the {self.name} exited while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise CoalmineError(
                    f"the {self.name} did not start in {self.ready_timeout_s:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(READY_POLL_S)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_exit(self, timeout_s: float) -> int | None:
        """The exit code once the process stops by itself within ``timeout_s``, else None."""
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

    def close(self) -> None:
        self.stop()

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
            raise CoalmineError(f"the {self.name} ignored signal {signum} and was killed") from None

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (all its threads, user + system)."""
        if self._process is None:
            return 0.0
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rpartition(")")[2].split()
        # utime and stime: fields 14 and 15 of proc(5), counted after the command name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(no output)"


P = TypeVar("P", bound=ChildProcess)


@contextmanager
def killed_after(process: P) -> Iterator[P]:
    """``process`` started; SIGKILLed when the block ends, however it ends (a test's
    leftovers need no clean exit)."""
    process.start()
    try:
        yield process
    finally:
        process.kill()
