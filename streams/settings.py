"""Every knob of Coalmine, read from ``COALMINE_*`` environment variables in one place.

Nothing else reads the environment: entry points call :func:`Settings.from_env` once and pass
the frozen object down.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from schemas.topics import Topic

MAX_WINDOW_SECONDS = 86_400
LOG_LEVELS = ("debug", "info", "warning", "error")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
MASK = "***"
# Kafka's legal topic characters; a topic name may have 249 characters, and every suffix of
# the registry (schemas/topics.py) fits after 200 (tests/unit/test_topic_registry.py).
_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,200}")
_SECRET_QUERY_KEYS = re.compile(r"pass|secret|token|key", re.IGNORECASE)


class SettingsError(ValueError):
    """A ``COALMINE_*`` variable has a value that cannot be used."""


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: ``low <= value <= high``, or ``low < value``
    when ``low_open``. NaN is in no range."""

    low: float
    high: float = math.inf
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        """``"between 1 and 65,535"``, ``"positive and at most 60"``, ``"at least 1"``."""
        low, high = _number_text(self.low), _number_text(self.high)
        if self.low_open:
            lower = "positive" if self.low == 0 else f"above {low}"
            return lower if self.high == math.inf else f"{lower} and at most {high}"
        if self.high == math.inf:
            return f"at least {low}"
        return f"between {low} and {high}"


def _number_text(value: float) -> str:
    return f"{int(value):,}" if math.isfinite(value) and value == int(value) else f"{value:g}"


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
    kafka_security_protocol: str = field(
        default="PLAINTEXT",
        metadata={
            "env": "COALMINE_KAFKA_SECURITY_PROTOCOL",
            "doc": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; every Kafka client uses it.",
            "choices": SECURITY_PROTOCOLS,
        },
    )
    kafka_sasl_mechanism: str = field(
        default="PLAIN",
        metadata={
            "env": "COALMINE_KAFKA_SASL_MECHANISM",
            "doc": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only).",
            "choices": SASL_MECHANISMS,
        },
    )
    kafka_username: str = field(
        default="",
        metadata={"env": "COALMINE_KAFKA_USERNAME", "doc": "SASL username."},
    )
    kafka_password: str = field(
        default="",
        metadata={
            "env": "COALMINE_KAFKA_PASSWORD",
            "doc": "SASL password (secret: masked wherever settings are shown).",
            "secret": True,
        },
    )
    kafka_ca_file: Path | None = field(
        default=None,
        metadata={
            "env": "COALMINE_KAFKA_CA_FILE",
            "doc": "PEM file of the CA certificates that signed the brokers' (TLS protocols; "
            "default: the system's CAs).",
        },
    )
    kafka_cert_file: Path | None = field(
        default=None,
        metadata={
            "env": "COALMINE_KAFKA_CERT_FILE",
            "doc": "PEM client certificate, for brokers that authenticate clients by TLS "
            "(with COALMINE_KAFKA_KEY_FILE).",
        },
    )
    kafka_key_file: Path | None = field(
        default=None,
        metadata={
            "env": "COALMINE_KAFKA_KEY_FILE",
            "doc": "PEM private key of the client certificate.",
        },
    )
    kafka_key_password: str = field(
        default="",
        metadata={
            "env": "COALMINE_KAFKA_KEY_PASSWORD",
            "doc": "Password of an encrypted client key (secret: masked).",
            "secret": True,
        },
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
        metadata={
            "env": "COALMINE_TRACES_PARTITIONS",
            "doc": "Partitions of the traces topic.",
            "range": Range(1),
        },
    )
    replication_factor: int = field(
        default=1,
        metadata={
            "env": "COALMINE_REPLICATION_FACTOR",
            "doc": "Replication of created topics.",
            # Kafka's replication factor is a 16-bit number.
            "range": Range(1, 32_767),
        },
    )
    batch_max_events: int = field(
        default=2000,
        metadata={
            "env": "COALMINE_BATCH_MAX_EVENTS",
            "doc": "Largest ingest batch (events).",
            "range": Range(1),
        },
    )
    batch_max_seconds: float = field(
        default=0.5,
        metadata={
            "env": "COALMINE_BATCH_MAX_SECONDS",
            "doc": "Longest wait to fill a batch (above 0, at most 60).",
            "range": Range(0, 60, low_open=True),
        },
    )
    session_timeout_s: float = field(
        default=30.0,
        metadata={
            "env": "COALMINE_SESSION_TIMEOUT_S",
            "doc": "How long a silent worker keeps its partitions before the group takes them "
            "(6 to 90: brokers refuse less by default, Faust's requests time out after 90).",
            "range": Range(6, 90),
        },
    )
    window_seconds: int = field(
        default=5,
        metadata={
            "env": "COALMINE_WINDOW_SECONDS",
            "doc": "Length of the aggregation windows (0 turns aggregation off: spans only).",
            "range": Range(0, MAX_WINDOW_SECONDS),
        },
    )
    allowed_lateness_s: float = field(
        default=2.0,
        metadata={
            "env": "COALMINE_ALLOWED_LATENESS_S",
            "doc": "How long after its end a window waits for stragglers before it is emitted; "
            "later spans are counted in a correction row (at most 3600).",
            "range": Range(0, 3600),
        },
    )
    max_clock_skew_s: float = field(
        default=30.0,
        metadata={
            "env": "COALMINE_MAX_CLOCK_SKEW_S",
            "doc": "Spans ending further in the future than this are dead-lettered.",
            "range": Range(0, MAX_WINDOW_SECONDS, low_open=True),
        },
    )
    spans_ttl_days: int = field(
        default=90,
        metadata={
            "env": "COALMINE_SPANS_TTL_DAYS",
            "doc": "Days raw spans are kept (0 = forever).",
            "range": Range(0, 36_500),
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
        metadata={
            "env": "COALMINE_WORKER_PORT",
            "doc": "Port of the worker's web server.",
            "range": Range(1, 65_535),
        },
    )
    log_level: str = field(
        default="info",
        metadata={
            "env": "COALMINE_LOG_LEVEL",
            "doc": "debug, info, warning or error.",
            "choices": LOG_LEVELS,
        },
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
            values[f.name] = _parse(name, raw, f.type, f.metadata.get("choices", ()))
        settings = cls(**values)
        home = settings.home.resolve()
        url = settings.clickhouse_url or f"chdb://{home / 'chdb'}"
        settings = replace(settings, home=home, clickhouse_url=url)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first variable whose value cannot work."""
        problem = _first_problem(self)
        if problem is not None:
            raise SettingsError(problem)

    @property
    def is_embedded_clickhouse(self) -> bool:
        return self.clickhouse_url.startswith("chdb://")

    @property
    def chdb_path(self) -> Path:
        return Path(urlsplit(self.clickhouse_url).path)

    @property
    def consumer_group(self) -> str:
        return self.topic_prefix

    def topic(self, topic: Topic) -> str:
        """Full topic name: ``topic(TRACES)`` → ``coalmine.traces``."""
        return topic.full_name(self.topic_prefix)

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
        """Settings for display: secrets replaced by ``***``, and so are passwords and
        tokens in URLs."""
        shown = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                shown[f.metadata["env"]] = MASK if value else ""
            else:
                shown[f.metadata["env"]] = str(value)
        shown["COALMINE_CLICKHOUSE_URL"] = mask_url(self.clickhouse_url)
        return shown

    def __repr__(self) -> str:
        # A Settings object ends up in tracebacks, test reports and debug logs: never show
        # a secret there.
        return f"Settings({self.masked()})"


def mask_url(url: str) -> str:
    """``url`` fit to print: the password masked (``user:***@``), a user part without a
    password masked whole (it is often a token: ``***@host``), and secret-looking query
    parameters masked. A URL that cannot be parsed is masked whole."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return MASK
    netloc = parts.netloc
    if username is not None:
        host = netloc.rpartition("@")[2]
        user = f"{username}:{MASK}" if password is not None else MASK
        netloc = f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, MASK if _SECRET_QUERY_KEYS.search(k) else v) for k, v in pairs]
        if masked != pairs:
            query = urlencode(masked, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # unchanged; urlunsplit would also drop the empty host of chdb:///path
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _first_problem(s: Settings) -> str | None:
    """What is wrong with ``s``, as one line naming the variable, or None."""
    for f in fields(s):
        name, value = f.metadata["env"], getattr(s, f.name)
        allowed: Range | None = f.metadata.get("range")
        if allowed is not None and value not in allowed:
            return f"{name} must be {allowed.describe()}, not {value!r}"
        choices: tuple[str, ...] = f.metadata.get("choices", ())
        if choices and value not in choices:
            return f"{name} must be one of {', '.join(choices)}, not {value!r}"
    return _url_problem(s) or _naming_problem(s) or _kafka_security_problem(s)


def _url_problem(s: Settings) -> str | None:
    try:
        scheme = urlsplit(s.clickhouse_url).scheme
    except ValueError:
        scheme = ""
    if scheme not in {"chdb", "http", "https"}:
        # Nothing of the value is shown: a mistyped URL may carry a password anywhere in it
        # (in ``user:pass@host`` even the "scheme" is the user name).
        return "COALMINE_CLICKHOUSE_URL must start with chdb://, http:// or https://"
    if scheme == "chdb" and not s.chdb_path.is_absolute():
        return "COALMINE_CLICKHOUSE_URL: a chdb URL needs an absolute path"
    return None


def _naming_problem(s: Settings) -> str | None:
    if not _TOPIC_PREFIX.fullmatch(s.topic_prefix):
        return (
            "COALMINE_TOPIC_PREFIX must be 1 to 200 letters, digits, '.', '_' or '-' "
            f"(a Kafka topic name), not {s.topic_prefix!r}"
        )
    return None


def _kafka_security_problem(s: Settings) -> str | None:
    protocol = s.kafka_security_protocol
    if protocol in SASL_PROTOCOLS:
        if not (s.kafka_username and s.kafka_password):
            return (
                f"COALMINE_KAFKA_SECURITY_PROTOCOL={protocol} needs COALMINE_KAFKA_USERNAME "
                "and COALMINE_KAFKA_PASSWORD"
            )
    elif s.kafka_username or s.kafka_password:
        return (
            "COALMINE_KAFKA_USERNAME and COALMINE_KAFKA_PASSWORD are only used with "
            f"COALMINE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL, not {protocol}"
        )
    files = {
        "COALMINE_KAFKA_CA_FILE": s.kafka_ca_file,
        "COALMINE_KAFKA_CERT_FILE": s.kafka_cert_file,
        "COALMINE_KAFKA_KEY_FILE": s.kafka_key_file,
    }
    given = [name for name, path in files.items() if path is not None]
    if s.kafka_key_password:
        given.append("COALMINE_KAFKA_KEY_PASSWORD")
    if given and protocol not in TLS_PROTOCOLS:
        return (
            f"{given[0]} is only used with COALMINE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, "
            f"not {protocol}"
        )
    if (s.kafka_cert_file is None) != (s.kafka_key_file is None):
        return "COALMINE_KAFKA_CERT_FILE and COALMINE_KAFKA_KEY_FILE go together: set both"
    if s.kafka_key_password and s.kafka_key_file is None:
        return "COALMINE_KAFKA_KEY_PASSWORD is set but COALMINE_KAFKA_KEY_FILE is not"
    for name, path in files.items():
        if path is not None and not path.is_file():
            return f"{name}: no such file: {path}"
    return None


def _parse(name: str, raw: str, annotation: object, choices: tuple[str, ...] = ()) -> Any:
    kind = str(annotation)
    if kind.startswith("Path"):
        return Path(raw).expanduser()
    if kind not in {"int", "float"}:
        # Choices are matched case-insensitively and kept as spelled in the list.
        return next((choice for choice in choices if choice.lower() == raw.lower()), raw)
    try:
        value = int(raw) if kind == "int" else float(raw)
    except ValueError:
        noun = "an integer" if kind == "int" else "a number"
        raise SettingsError(f"{name} must be {noun}, not {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, not {raw!r}")
    return value


def environment_reference() -> str:
    """A markdown table of every variable; a test keeps the README's table in step with it."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = "" if f.default is None else str(f.default)
        rows.append(f"| `{f.metadata['env']}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)
