"""``coalmine otlp`` as a child process, for the benchmark and the integration tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from streams.devtools import localkafka
from streams.devtools.child_process import ChildProcess, killed_after
from streams.settings import Settings


class ReceiverProcess(ChildProcess):
    """The receiver on a free loopback port, ready once the port takes connections."""

    name = "OTLP receiver"

    def __init__(self, settings: Settings, log_path: Path) -> None:
        port = localkafka.free_loopback_port()
        super().__init__(replace(settings, otlp_port=port), log_path, ("streams.cli", "otlp"))

    def ready(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.settings.otlp_port), timeout=0.5).close()
        except OSError:
            return False
        return True


@contextmanager
def running_receiver(settings: Settings, log_path: Path) -> Iterator[Settings]:
    """A started receiver; yields the settings it runs with and kills it afterwards."""
    with killed_after(ReceiverProcess(settings, log_path)) as process:
        yield process.settings
