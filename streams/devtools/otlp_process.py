"""``coalmine otlp`` as a child process, for the benchmark and the integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from streams.devtools import localkafka
from streams.errors import CoalmineError
from streams.settings import Settings

READY_TIMEOUT_S = 60.0


@contextmanager
def running_receiver(settings: Settings, log_path: Path) -> Iterator[Settings]:
    """The receiver on a free loopback port, its output appended to ``log_path``; yields the
    settings it runs with, and kills it afterwards."""
    settings = replace(settings, otlp_port=localkafka.free_loopback_port())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "otlp"],
            env={**os.environ, **settings.as_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _listening(settings.otlp_port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                raise CoalmineError("the OTLP receiver did not start:\n" + "\n".join(tail))
            time.sleep(0.1)
        yield settings
    finally:
        process.kill()
        process.wait()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True
