"""ClickHouse access: one client factory for chDB and servers, migrations, the span sink.

The same clickhouse-connect client code serves both engines: ``chdb:///abs/path`` opens the
embedded engine in this process (only one process may hold a data folder), ``http(s)://``
talks to a server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from schemas.window_stats import WindowStats
from streams.errors import ClickHouseUnavailableError
from streams.failures import Failure, classify, one_line
from streams.ingest.aggregate import VERSION_STATS_COLUMNS, WindowKey, WindowRow, version_stats_row
from streams.ingest.route import Owner, SpanRow, SpanWrite, position
from streams.settings import Settings, mask_url

log = logging.getLogger(__name__)

DATABASE = "coalmine"
MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def connect(settings: Settings) -> Client:
    """Open the configured ClickHouse; a clear error when it cannot be reached or opened."""
    url = settings.clickhouse_url
    if settings.is_embedded_clickhouse and (owner := embedded_owner_url(settings)) is not None:
        raise ClickHouseUnavailableError(
            f"the embedded ClickHouse at {settings.chdb_path} is held by the worker answering "
            f"at {owner}; stop it first (`coalmine sql` still works through it)"
        )
    try:
        if settings.is_embedded_clickhouse:
            settings.chdb_path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=url)
        else:
            # Sessions start in `default`: the URL's database may not exist before the first
            # migration, and every query here names `coalmine.` explicitly.
            client = clickhouse_connect.get_client(dsn=url, database="default")
    except Exception as exc:
        raise ClickHouseUnavailableError(_open_failure(settings, exc)) from exc
    return client


def _open_failure(settings: Settings, exc: Exception) -> str:
    if settings.is_embedded_clickhouse and "EmbeddedServer" in str(exc):
        return (
            f"the embedded ClickHouse at {settings.chdb_path} is held by another process "
            "(a running `coalmine worker`?); only one process can open it"
        )
    return f"cannot open ClickHouse at {mask_url(settings.clickhouse_url)}: {exc}"


# --- who holds the embedded database ----------------------------------------------------
# The holder keeps an exclusive flock on the owner file for as long as it lives. The kernel
# drops it the moment the process dies, so a SIGKILLed worker frees the folder at once: a pid
# check did not (a killed worker stays a zombie until its parent reaps it, and a recycled
# pid can name an unrelated process).


def owner_file(settings: Settings) -> Path:
    return settings.chdb_path.with_name(settings.chdb_path.name + ".owner.json")


class EmbeddedClaim:
    """This process's hold on the chDB folder; :meth:`release` (or exiting) ends it."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        # Emptied, not unlinked: a successor may have opened this inode already, and would
        # then lock a file that the next process cannot find.
        os.ftruncate(self._fd, 0)
        os.close(self._fd)


def claim_embedded(settings: Settings, service_url: str) -> EmbeddedClaim:
    """Record that this process holds the chDB folder and where it answers queries."""
    path = owner_file(settings)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ClickHouseUnavailableError(
            f"the embedded ClickHouse at {settings.chdb_path} is held by another worker "
            f"({embedded_owner_url(settings) or 'starting'}); stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "url": service_url}).encode())
    return EmbeddedClaim(fd)


def embedded_owner_url(settings: Settings) -> str | None:
    """The query URL of the live process holding the chDB folder, if one does."""
    try:
        fd = os.open(owner_file(settings), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _owner_url(os.read(fd, 64 * 1024))
    finally:
        os.close(fd)
    return None  # nobody holds it: a file left by a crashed or stopped worker


def _owner_url(record: bytes) -> str | None:
    try:
        url = json.loads(record)["url"]
    except (ValueError, KeyError, TypeError):
        return None  # the holder is still writing it
    return str(url)


# --- migrations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file's statements; each ends with ``;`` at the end of a line."""
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip() for s in re.split(r";\s*$", body, flags=re.MULTILINE) if s.strip()]


def migrations_dir() -> Path:
    """``sql/`` of the source tree, or the copy packaged inside an installed wheel."""
    packaged = Path(str(files("streams"))) / "_sql"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "sql"


def example_query(name: str) -> str:
    """The text of ``sql/queries/<name>.sql``."""
    return (migrations_dir() / "queries" / f"{name}.sql").read_text(encoding="utf-8")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((directory or migrations_dir()).glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise ClickHouseUnavailableError(
                f"migration file name {path.name} is not NNNN_name.sql"
            )
        found.append(Migration(int(match.group(1)), path.stem, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ClickHouseUnavailableError("two migration files share a version number")
    return found


def migrate(client: Client, spans_ttl_days: int | None = None) -> list[Migration]:
    """Apply every migration not yet recorded, in order; returns those applied.

    Idempotent: statements are ``IF NOT EXISTS`` and each applied migration is recorded with
    its checksum, so a changed file after application is reported instead of half-applied.
    """
    pending = []
    applied = _applied_checksums(client)
    for migration in load_migrations():
        recorded = applied.get(migration.version)
        if recorded is None:
            pending.append(migration)
        elif recorded != migration.checksum:
            log.warning("migration %s changed after it was applied; not re-applied", migration.name)
    for migration in pending:
        log.info("applying migration %s", migration.name)
        for statement in migration.statements():
            client.command(statement)
        client.insert(
            f"{DATABASE}.schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
    if spans_ttl_days is not None:
        set_spans_retention(client, spans_ttl_days)
    return pending


def _applied_checksums(client: Client) -> dict[int, str]:
    exists = client.command(
        "SELECT count() FROM system.tables WHERE database = {db:String} "
        "AND name = 'schema_migrations'",
        parameters={"db": DATABASE},
    )
    if not exists:
        return {}
    rows = client.query(f"SELECT version, checksum FROM {DATABASE}.schema_migrations").result_rows
    return {int(version): str(checksum) for version, checksum in rows}


def set_spans_retention(client: Client, ttl_days: int) -> None:
    """Make the spans TTL match the setting (0 keeps spans forever)."""
    create = str(
        client.command(
            "SELECT create_table_query FROM system.tables "
            "WHERE database = {db:String} AND name = 'spans'",
            parameters={"db": DATABASE},
        )
    )
    wanted = f"toIntervalDay({ttl_days})"
    has_ttl = " TTL " in create
    if ttl_days > 0 and wanted not in create:
        client.command(
            f"ALTER TABLE {DATABASE}.spans MODIFY TTL "
            f"toDateTime(start_time) + INTERVAL {int(ttl_days)} DAY"
        )
    elif ttl_days == 0 and has_ttl:
        client.command(f"ALTER TABLE {DATABASE}.spans REMOVE TTL")


# --- the span sink ------------------------------------------------------------------------

SPAN_COLUMNS: tuple[str, ...] = SpanRow._fields
"""The columns of ``coalmine.spans`` a worker inserts, in the order of a row's values."""


class SpanWriter:
    """Inserts span rows exactly once per ``event_id``.

    Before inserting a batch it asks which of the batch's event ids are already stored
    (narrowed to the batch's time range, so only a few partitions and granules are read) and
    inserts only the others. A batch re-delivered after a crash therefore adds nothing. The
    check is exact because each Kafka partition has one consumer at a time and the insert is
    synchronous: when ``write`` returns, the rows are durable and visible. A row whose id is
    stored with another ``content_hash`` (another message's bytes) is refused as a conflict;
    rows whose values ClickHouse rejects are isolated by halving the insert and refused.
    """

    def __init__(self, client: Client, table: str = "spans") -> None:
        self._client = client
        self._table = f"{DATABASE}.{table}"

    def write(self, rows: Sequence[SpanRow]) -> SpanWrite:
        """Insert the rows whose event_id is not stored yet.

        Raises the client's error when ClickHouse fails for a reason other than the rows'
        values; nothing is then known to be written and the caller retries the whole batch
        (which this method makes safe).
        """
        fresh, refused = self._unique(rows)
        if not fresh:
            return SpanWrite(0, {}, refused)
        stored = self._stored(fresh)
        owners = {event_id: owner for event_id, (owner, _) in stored.items()}
        new_rows = []
        for row in fresh:
            found = stored.get(row.event_id)
            if found is None:
                new_rows.append(row)
            elif found[1] not in (0, row.content_hash):
                refused[position(row)] = _conflict(row.event_id, found[0])
        for chunk in chunks_by_day(new_rows, lambda row: row.start_time):
            refused.update(isolate_refused_rows(chunk, self._insert, position, "span"))
        inserted = [row for row in new_rows if position(row) not in refused]
        for row in inserted:
            owners[row.event_id] = position(row)
        return SpanWrite(len(inserted), owners, refused)

    def _insert(self, rows: Sequence[SpanRow]) -> None:
        try:
            self._client.insert(self._table, rows, column_names=SPAN_COLUMNS)
        except Exception:
            drain_after_failure(self._client)  # the halves of a refused insert come next
            raise

    def _unique(self, rows: Sequence[SpanRow]) -> tuple[list[SpanRow], dict[Owner, str]]:
        """The first row of each event id, and the later ones with other content, refused."""
        seen: dict[Any, SpanRow] = {}
        refused: dict[Owner, str] = {}
        for row in rows:
            first = seen.setdefault(row.event_id, row)
            if first.content_hash != row.content_hash:
                refused[position(row)] = _conflict(row.event_id, position(first))
        return list(seen.values()), refused

    def _stored(self, rows: Sequence[SpanRow]) -> dict[Any, tuple[Owner, int]]:
        """Per stored event id of ``rows``: the span it came from and its content hash."""
        times = [row.start_time for row in rows]
        # min(): a rebalance race may have stored an id twice until the merge folds it.
        result = self._client.query(
            "SELECT event_id, min((kafka_partition, kafka_offset, kafka_index)), "
            "argMin(content_hash, (kafka_partition, kafka_offset, kafka_index)) "
            f"FROM {self._table} "
            "WHERE start_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)} "
            "AND event_id IN {ids:Array(UUID)} GROUP BY event_id",
            parameters={
                "lo": min(times),
                "hi": max(times),
                "ids": [row.event_id for row in rows],
            },
        )
        return {
            event_id: ((int(owner[0]), int(owner[1]), int(owner[2])), int(stored_hash))
            for event_id, owner, stored_hash in result.result_rows
        }


def _conflict(event_id: Any, stored_from: Owner) -> str:
    return (
        f"event_id {event_id} is already stored from another span (partition "
        f"{stored_from[0]}, offset {stored_from[1]}, index {stored_from[2]}) with different "
        "content; an event id names one event"
    )


MAX_PARTITIONS_PER_INSERT = 100
"""ClickHouse's ``max_partitions_per_insert_block`` default: tables here are partitioned by
day, and an insert touching more days is refused as a whole."""

Row = TypeVar("Row")
Key = TypeVar("Key")


def chunks_by_day(
    rows: Sequence[Row], time_of: Callable[[Row], datetime], days: int = MAX_PARTITIONS_PER_INSERT
) -> list[list[Row]]:
    """``rows`` in groups that each touch at most ``days`` days (in order of first use)."""
    by_day: dict[date, list[Row]] = {}
    for row in rows:
        by_day.setdefault(time_of(row).date(), []).append(row)
    groups = list(by_day.values())
    return [
        [row for group in groups[i : i + days] for row in group]
        for i in range(0, len(groups), days)
    ]


def isolate_refused_rows(
    rows: Sequence[Row],
    insert: Callable[[Sequence[Row]], None],
    identify: Callable[[Row], Key],
    what: str,
) -> dict[Key, str]:
    """Insert ``rows``; when ClickHouse refuses their values, halve until the rows at fault
    are alone, and return those (by ``identify``) with the reason (the others are inserted).
    Any other failure is raised: retrying the batch is then the caller's decision."""
    if not rows:
        return {}
    try:
        insert(rows)
    except Exception as exc:
        if classify(exc) is not Failure.DATA:
            raise
        if len(rows) == 1:
            return {identify(rows[0]): f"ClickHouse refused the {what}: {one_line(exc)}"}
        middle = len(rows) // 2
        return isolate_refused_rows(rows[:middle], insert, identify, what) | isolate_refused_rows(
            rows[middle:], insert, identify, what
        )
    return {}


class VersionStatsWriter:
    """Stores emitted window partials and reads back what a partition's stored rows cover."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def write(self, rows: Sequence[WindowRow]) -> None:
        """One insert per at most 100 days of windows (the per-minute rollup is partitioned
        by day); each row lands whole or not at all, which is all :mod:`streams.ingest.aggregate`
        needs (coverage is tracked per row). The chunks are the same on a retry, so
        ClickHouse drops a chunk that had landed (see ``sql/0003``)."""
        for chunk in chunks_by_day(rows, lambda row: row.stats.window_start):
            self._client.insert(
                f"{DATABASE}.version_stats",
                [version_stats_row(row) for row in chunk],
                column_names=list(VERSION_STATS_COLUMNS),
            )

    def coverage(
        self, topic: str, window_seconds: int, lowest: Mapping[int, int]
    ) -> dict[int, dict[WindowKey, int]]:
        """Per partition and window, one past the last offset its stored rows count, for the
        rows reaching past ``lowest[partition]`` (the first offset about to be consumed)."""
        covered: dict[int, dict[WindowKey, int]] = {partition: {} for partition in lowest}
        if not lowest:
            return covered
        result = self._client.query(
            "SELECT kafka_partition, agent, version, toUnixTimestamp(window_start), "
            f"max(offset_until) FROM {DATABASE}.version_stats "
            "WHERE kafka_topic = {topic:String} AND window_seconds = {seconds:UInt32} "
            "AND kafka_partition IN {partitions:Array(UInt32)} AND offset_until > {low:UInt64} "
            "GROUP BY kafka_partition, agent, version, window_start",
            parameters={
                "topic": topic,
                "seconds": window_seconds,
                "partitions": list(lowest),
                "low": min(lowest.values()),
            },
        )
        for partition, agent, version, start, until in result.result_rows:
            if until > lowest[partition]:
                covered[partition][(agent, version, int(start))] = int(until)
        return covered


def stored_partials(
    client: Client, agent: str, versions: Sequence[str], window_seconds: int, since: datetime
) -> list[tuple[WindowStats, bool]]:
    """The stored window partials of ``agent``'s ``versions`` from windows starting at or
    after ``since``, each with its ``late`` flag (a correction row), in window order."""
    fields = list(WindowStats.model_fields)
    result = client.query(
        f"SELECT {', '.join(fields)}, late FROM {DATABASE}.version_stats FINAL "
        "WHERE agent = {agent:String} AND version IN {versions:Array(String)} "
        "AND window_seconds = {seconds:UInt32} AND window_start >= {since:DateTime('UTC')} "
        "ORDER BY window_start, late, version, source",
        parameters={
            "agent": agent,
            "versions": list(versions),
            "seconds": window_seconds,
            "since": since.astimezone(UTC).replace(tzinfo=None),
        },
    )
    partials = []
    for row in result.result_rows:
        values = dict(zip(fields, row, strict=False))
        start: datetime = values["window_start"]
        values["window_start"] = start if start.tzinfo else start.replace(tzinfo=UTC)
        values["latency_buckets"] = [int(c) for c in values["latency_buckets"]]
        partials.append((WindowStats.model_validate(values), bool(row[-1])))
    return partials


def drain_after_failure(client: Client) -> None:
    """chDB (26.9) hands what a failed query had already written to the next query of the
    same session, ahead of that query's own result; one throwaway query takes it. Whoever
    uses a client again after a failure calls this first."""
    # If this fails too, the next query fails the same way and says why.
    with contextlib.suppress(ClickHouseError):
        client.raw_query("SELECT 1")


def describe(settings: Settings) -> str:
    """Where the data lives, for progress lines."""
    if settings.is_embedded_clickhouse:
        return f"chDB at {settings.chdb_path}"
    return f"ClickHouse at {urlsplit(mask_url(settings.clickhouse_url)).netloc}"
