"""Every knob of Coalmine, read from ``COALMINE_*`` environment variables in one place.

Nothing else reads the environment: entry points call :func:`Settings.from_env` once and pass
the frozen object down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MAX_WINDOW_SECONDS = 86_400


class SettingsError(ValueError):
    """A ``COALMINE_*`` variable has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """All settings, with the environment variable that sets each one in its metadata."""

    home: Path = field(
        default=Path(".coalmine"),
        metadata={"env": "COALMINE_HOME", "doc": "Local state: Kafka jars and data, chDB data."},
    )
    kafka_bootstrap: str = field(
        default="127.0.0.1:9092",
        metadata={"env": "COALMINE_KAFKA_BOOTSTRAP", "doc": "Kafka bootstrap servers."},
    )
    kafka_jars_dir: Path | None = field(
        default=None,
        metadata={
            "env": "COALMINE_KAFKA_JARS",
            "doc": "Jars of the local dev broker (default <home>/kafka/<version>/libs).",
        },
    )
    clickhouse_url: str = field(
        default="",
        metadata={
            "env": "COALMINE_CLICKHOUSE_URL",
            "doc": "chdb:///abs/path (embedded; default <home>/chdb) or http(s)://user:pass@host:8123/db",
        },
    )
    topic_prefix: str = field(
        default="coalmine",
        metadata={
            "env": "COALMINE_TOPIC_PREFIX",
            "doc": "Prefix of every topic and the consumer group.",
        },
    )
    traces_partitions: int = field(
        default=4,
        metadata={"env": "COALMINE_TRACES_PARTITIONS", "doc": "Partitions of the traces topic."},
    )
    replication_factor: int = field(
        default=1,
        metadata={"env": "COALMINE_REPLICATION_FACTOR", "doc": "Replication of created topics."},
    )
    batch_max_events: int = field(
        default=2000,
        metadata={"env": "COALMINE_BATCH_MAX_EVENTS", "doc": "Largest ingest batch (events)."},
    )
    batch_max_seconds: float = field(
        default=0.5,
        metadata={"env": "COALMINE_BATCH_MAX_SECONDS", "doc": "Longest wait to fill a batch."},
    )
    session_timeout_s: float = field(
        default=30.0,
        metadata={
            "env": "COALMINE_SESSION_TIMEOUT_S",
            "doc": "How long a silent worker keeps its partitions before the group takes them.",
        },
    )
    window_seconds: int = field(
        default=5,
        metadata={
            "env": "COALMINE_WINDOW_SECONDS",
            "doc": "Length of the aggregation windows (0 turns aggregation off: spans only).",
        },
    )
    allowed_lateness_s: float = field(
        default=2.0,
        metadata={
            "env": "COALMINE_ALLOWED_LATENESS_S",
            "doc": "How long after its end a window waits for stragglers before it is emitted; "
            "later spans are counted in a correction row.",
        },
    )
    max_clock_skew_s: float = field(
        default=30.0,
        metadata={
            "env": "COALMINE_MAX_CLOCK_SKEW_S",
            "doc": "Spans ending further in the future than this are dead-lettered.",
        },
    )
    spans_ttl_days: int = field(
        default=90,
        metadata={
            "env": "COALMINE_SPANS_TTL_DAYS",
            "doc": "Days raw spans are kept (0 = forever).",
        },
    )
    prices_file: Path | None = field(
        default=None,
        metadata={
            "env": "COALMINE_PRICES_FILE",
            "doc": "JSON price table merged over the built-in one (same format).",
        },
    )
    worker_host: str = field(
        default="127.0.0.1",
        metadata={"env": "COALMINE_WORKER_HOST", "doc": "Address the worker's web server binds."},
    )
    worker_port: int = field(
        default=6066,
        metadata={"env": "COALMINE_WORKER_PORT", "doc": "Port of the worker's web server."},
    )
    log_level: str = field(
        default="info",
        metadata={"env": "COALMINE_LOG_LEVEL", "doc": "debug, info, warning or error."},
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``); unknown values raise
        :class:`SettingsError` with the variable's name."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(name, raw, f.type)
        settings = cls(**values)
        home = settings.home.resolve()
        url = settings.clickhouse_url or f"chdb://{home / 'chdb'}"
        settings = replace(settings, home=home, clickhouse_url=url)
        settings.validate()
        return settings

    def validate(self) -> None:
        scheme = urlsplit(self.clickhouse_url).scheme
        if scheme not in {"chdb", "http", "https"}:
            raise SettingsError(
                f"COALMINE_CLICKHOUSE_URL must start with chdb://, http:// or https://, "
                f"not {self.clickhouse_url!r}"
            )
        if scheme == "chdb" and not self.chdb_path.is_absolute():
            raise SettingsError("COALMINE_CLICKHOUSE_URL: a chdb URL needs an absolute path")
        for name, value in (
            ("COALMINE_TRACES_PARTITIONS", self.traces_partitions),
            ("COALMINE_BATCH_MAX_EVENTS", self.batch_max_events),
            ("COALMINE_REPLICATION_FACTOR", self.replication_factor),
        ):
            if value < 1:
                raise SettingsError(f"{name} must be at least 1, not {value}")
        if self.batch_max_seconds <= 0:
            raise SettingsError("COALMINE_BATCH_MAX_SECONDS must be positive")
        if not 0 <= self.window_seconds <= MAX_WINDOW_SECONDS:
            raise SettingsError(
                f"COALMINE_WINDOW_SECONDS must be between 0 and {MAX_WINDOW_SECONDS}, "
                f"not {self.window_seconds}"
            )
        if self.allowed_lateness_s < 0:
            raise SettingsError("COALMINE_ALLOWED_LATENESS_S must not be negative")
        if self.max_clock_skew_s <= 0:
            raise SettingsError("COALMINE_MAX_CLOCK_SKEW_S must be positive")

    @property
    def is_embedded_clickhouse(self) -> bool:
        return self.clickhouse_url.startswith("chdb://")

    @property
    def chdb_path(self) -> Path:
        return Path(urlsplit(self.clickhouse_url).path)

    @property
    def consumer_group(self) -> str:
        return self.topic_prefix

    def topic(self, name: str) -> str:
        """Full topic name: ``topic("traces")`` → ``coalmine.traces``."""
        return f"{self.topic_prefix}.{name}"

    @property
    def aggregation_enabled(self) -> bool:
        return self.window_seconds > 0

    @property
    def worker_url(self) -> str:
        return f"http://{self.worker_host}:{self.worker_port}"

    def as_env(self) -> dict[str, str]:
        """These settings as ``COALMINE_*`` variables, for a child process (secrets included)."""
        return {
            f.metadata["env"]: str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    def masked(self) -> dict[str, str]:
        """Settings for display, with passwords in URLs replaced by ``***``."""
        shown = {f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self)}
        shown["COALMINE_CLICKHOUSE_URL"] = mask_url(self.clickhouse_url)
        return shown


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _parse(name: str, raw: str, annotation: object) -> Any:
    kind = str(annotation)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("Path"):
            return Path(raw).expanduser()
    except ValueError:
        noun = {"int": "an integer", "float": "a number"}.get(kind, "a path")
        raise SettingsError(f"{name} must be {noun}, not {raw!r}") from None
    return raw


def environment_reference() -> str:
    """A markdown table of every variable; a test keeps the README's table in step with it."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = "" if f.default is None else str(f.default)
        rows.append(f"| `{f.metadata['env']}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)
