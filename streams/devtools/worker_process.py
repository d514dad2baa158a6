"""``coalmine worker`` as a child process: started, awaited, signalled, queried.

The demo runs its worker this way, and the integration tests use it to crash and restart one.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams import sqlcli
from streams.devtools.child_process import ChildProcess
from streams.settings import Settings


class WorkerProcess(ChildProcess):
    """One worker process with the given settings, its output appended to ``log_path``;
    ready once its web server answers."""

    name = "worker"

    def __init__(
        self, settings: Settings, log_path: Path, command: Sequence[str] = ("streams.cli", "worker")
    ) -> None:
        super().__init__(settings, log_path, command)

    def ready(self) -> bool:
        return sqlcli.worker_answers(self.settings.worker_url)

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
