"""``coalmine alerts [--follow] [--agent A] [--since T] [--json]``: the alerts on
``coalmine.alerts``, one readable line each (or the JSON event), and with ``--follow`` each
new one as it comes until Ctrl-C.

A Kafka client and nothing more: it reads the topic without a consumer group (so it disturbs
nobody and commits nothing), from the beginning or, with ``--since``, from the first record
produced at or after that moment (Kafka's time index), and shows the alerts whose own time
is at or after it too. A record that is not an alert is reported on stderr and skipped.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, TextIO

from schemas.alert import Alert
from schemas.topics import ALERTS
from streams.alerts.records import parse_event_record
from streams.alerts.text import alert_line
from streams.errors import CoalmineError
from streams.logs import RateLimitedLog, librdkafka_log
from streams.sdk.compacted import PartitionReader, retrying
from streams.sdk.kafka_security import client_config
from streams.versions.catalog import InvalidRecordError

if TYPE_CHECKING:
    from streams.settings import Settings

log = logging.getLogger(__name__)

KAFKA_TIMEOUT_S: Final = 10.0
READ_TIMEOUT_S: Final = 60.0
"""How long reading up to the end may take without ``--follow``."""
POLL_S: Final = 0.5
LOOKUP_S: Final = 2.0
"""How often ``--follow`` looks for a topic that does not exist yet."""


@dataclass(frozen=True)
class Selection:
    agent: str | None = None
    since: datetime | None = None

    def __contains__(self, alert: Alert) -> bool:
        if self.agent is not None and alert.agent != self.agent:
            return False
        return self.since is None or alert.time >= self.since


def render(alert: Alert, as_json: bool) -> str:
    return alert.model_dump_json() if as_json else alert_line(alert)


def run(
    settings: Settings,
    shown: Selection,
    *,
    follow: bool,
    as_json: bool,
    out: TextIO = sys.stdout,
) -> int:
    """Print the selected alerts; with ``follow``, until Ctrl-C (exit 0)."""
    # Following, broker trouble is waited out (the consumer reconnects by itself).
    on_error = RateLimitedLog(log, logging.WARNING) if follow else _fail
    config = {
        **client_config(settings),
        # librdkafka's own lines (a broker down: one per reconnect) at most once per 10 s.
        "logger": librdkafka_log("coalmine.librdkafka"),
    }
    reader = PartitionReader(config, name="coalmine-alerts", on_error=on_error)
    try:
        count = _print_alerts(
            reader, settings.topic(ALERTS), shown, follow=follow, as_json=as_json, out=out
        )
    except KeyboardInterrupt as exc:
        if type(exc) is not KeyboardInterrupt:  # SIGTERM (streams.cli.Terminated)
            raise
        return 0
    except BrokenPipeError:  # `coalmine alerts | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        reader.close()
    if count == 0 and not as_json:
        print("no alerts", file=out)
    return 0


def _fail(problem: str) -> None:
    raise CoalmineError(problem)


def _print_alerts(
    reader: PartitionReader,
    topic: str,
    shown: Selection,
    *,
    follow: bool,
    as_json: bool,
    out: TextIO,
) -> int:
    def look_up() -> list[int]:
        return retrying(lambda: reader.partitions(topic, KAFKA_TIMEOUT_S), f"read {topic}", 30)

    partitions = look_up()
    while not partitions:
        if not follow:
            return 0  # no topic yet: no alert was ever raised
        time.sleep(LOOKUP_S)
        partitions = look_up()
    since_ms = None if shown.since is None else int(shown.since.timestamp() * 1000)
    retrying(
        lambda: reader.assign({topic: partitions}, KAFKA_TIMEOUT_S, since_ms),
        f"read {topic}",
        30,
    )
    count = 0
    deadline = time.monotonic() + READ_TIMEOUT_S
    while follow or not reader.at_ends:
        if not follow and time.monotonic() > deadline:
            raise CoalmineError(f"{topic} was not read to its end within {READ_TIMEOUT_S:.0f} s")
        for record in reader.read(POLL_S):
            count += _show(record.key, record.value, record.offset, shown, as_json=as_json, out=out)
    return count


def _show(
    key: bytes | None,
    value: bytes | None,
    offset: int,
    shown: Selection,
    *,
    as_json: bool,
    out: TextIO,
) -> int:
    try:
        alert = parse_event_record(Alert, key, value)
    except InvalidRecordError as exc:
        print(f"coalmine: skipped the record at offset {offset}: {exc}", file=sys.stderr)
        return 0
    if alert not in shown:
        return 0
    print(render(alert, as_json), file=out, flush=True)
    return 1
