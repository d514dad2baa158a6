"""``coalmine otlp`` as a child process, for the benchmark and the integration tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from streams.devtools import localkafka
from streams.devtools.worker_process import WorkerProcess
from streams.settings import Settings


class ReceiverProcess(WorkerProcess):
    """The receiver on a free loopback port, ready once the port takes connections."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        port = localkafka.free_loopback_port()
        super().__init__(replace(settings, otlp_port=port), log_path, ("streams.cli", "otlp"))

    def answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.settings.otlp_port), timeout=0.5).close()
        except OSError:
            return False
        return True


@contextmanager
def running_receiver(settings: Settings, log_path: Path) -> Iterator[Settings]:
    """A started receiver; yields the settings it runs with and kills it afterwards."""
    process = ReceiverProcess(settings, log_path)
    process.start()
    try:
        yield process.settings
    finally:
        process.kill()
