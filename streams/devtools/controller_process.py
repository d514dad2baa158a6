"""``coalmine controller`` as a child process, for the router benchmark and the tests."""

from __future__ import annotations

from pathlib import Path

from streams.devtools.child_process import ChildProcess
from streams.settings import Settings

READY_LINE = "controller started"
"""What the controller logs once it has rebuilt its state and subscribed to its inputs."""


class ControllerProcess(ChildProcess):
    """A controller, ready once it has logged :data:`READY_LINE` (again, after a restart)."""

    name = "controller"
    ready_timeout_s = 60.0

    def __init__(self, settings: Settings, log_path: Path, *, gate_interval_s: float = 0.5) -> None:
        super().__init__(
            settings,
            log_path,
            ("streams.cli", "controller", "--gate-interval", str(gate_interval_s)),
        )
        self._ready_lines_before = 0

    def start(self) -> None:
        self._ready_lines_before = self.log().count(READY_LINE)
        super().start()

    def ready(self) -> bool:
        return self.log().count(READY_LINE) > self._ready_lines_before
