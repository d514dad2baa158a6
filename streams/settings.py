"""Every knob of Coalmine, read from ``COALMINE_*`` environment variables in one place.

:class:`Settings` is the SDK's :class:`~streams.sdk.settings.SdkSettings` (Kafka, topic
prefix, the publisher's queue) plus the worker's and the command line's own variables. Nothing
else reads the environment: entry points call :func:`Settings.from_env` once and pass the
frozen object down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streams.httpguard import is_loopback
from streams.sdk.settings import (
    MASK,
    SASL_MECHANISMS,
    SASL_PROTOCOLS,
    TLS_PROTOCOLS,
    Range,
    SdkSettings,
    SettingsError,
)

# The variables' machinery is defined with the SDK's settings, which these extend; the
# worker's modules import all of it from here.
__all__ = [
    "LOG_LEVELS",
    "MAX_WINDOW_SECONDS",
    "SASL_MECHANISMS",
    "SASL_PROTOCOLS",
    "TLS_PROTOCOLS",
    "Range",
    "Settings",
    "SettingsError",
    "environment_reference",
    "mask_url",
]

MAX_WINDOW_SECONDS = 86_400
LOG_LEVELS = ("debug", "info", "warning", "error")
_SECRET_QUERY_KEYS = re.compile(r"pass|secret|token|key", re.IGNORECASE)


@dataclass(frozen=True, repr=False)  # SdkSettings.__repr__ masks the secrets
class Settings(SdkSettings):
    """All settings: the SDK's and these, with the environment variable that sets each one in
    its metadata."""

    home: Path = field(
        default=Path(".coalmine"),
        metadata={"env": "COALMINE_HOME", "doc": "Local state: Kafka jars and data, chDB data."},
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
    detector: str = field(
        default="on",
        metadata={
            "env": "COALMINE_DETECTOR",
            "doc": "`on`: the worker judges every canary taking traffic (judgements, alerts, "
            "rollback commands); `off`: it does not.",
            "choices": ("on", "off"),
        },
    )
    detector_margin_s: float = field(
        default=1.0,
        metadata={
            "env": "COALMINE_DETECTOR_MARGIN_S",
            "doc": "The detector compares a window this long after the workers emit it "
            "(window end + allowed lateness), so every worker's partial is in (at most 60).",
            "range": Range(0, 60),
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
    otlp_host: str = field(
        default="127.0.0.1",
        metadata={
            "env": "COALMINE_OTLP_HOST",
            "doc": "Address `coalmine otlp` binds; anything but loopback needs "
            "COALMINE_OTLP_TOKEN.",
        },
    )
    otlp_port: int = field(
        default=4318,
        metadata={
            "env": "COALMINE_OTLP_PORT",
            "doc": "Port of `coalmine otlp` (4318 is OTLP/HTTP's).",
            "range": Range(1, 65_535),
        },
    )
    otlp_token: str = field(
        default="",
        metadata={
            "env": "COALMINE_OTLP_TOKEN",
            "doc": "Bearer token `coalmine otlp` requires (`Authorization: Bearer <token>`); "
            "empty: none (secret: masked).",
            "secret": True,
        },
    )
    otlp_max_body_kbytes: int = field(
        default=20_480,
        metadata={
            "env": "COALMINE_OTLP_MAX_BODY_KBYTES",
            "doc": "Largest OTLP request body, compressed and again decompressed (KiB; at most "
            "1 GiB).",
            "range": Range(1, 1_048_576),
        },
    )
    otlp_max_concurrent_requests: int = field(
        default=4,
        metadata={
            "env": "COALMINE_OTLP_MAX_CONCURRENT_REQUESTS",
            "doc": "OTLP requests handled at once; more are answered 429 with Retry-After.",
            "range": Range(1, 1024),
        },
    )
    otlp_delivery_timeout_s: float = field(
        default=5.0,
        metadata={
            "env": "COALMINE_OTLP_DELIVERY_TIMEOUT_S",
            "doc": "How long an OTLP request waits for Kafka to acknowledge its spans before "
            "it is answered 503 (the exporter retries; above 0, at most 60).",
            "range": Range(0, 60, low_open=True),
        },
    )
    otlp_agent_attributes: str = field(
        default="gen_ai.agent.name,service.name",
        metadata={
            "env": "COALMINE_OTLP_AGENT_ATTRIBUTES",
            "doc": "Attributes naming a span's agent, first found wins (span, its ancestors in "
            "the request, then the resource).",
        },
    )
    otlp_version_attributes: str = field(
        default="gen_ai.agent.version,service.version",
        metadata={
            "env": "COALMINE_OTLP_VERSION_ATTRIBUTES",
            "doc": "Attributes naming a span's agent version, looked up the same way.",
        },
    )
    alert_webhook_url: str = field(
        default="",
        metadata={
            "env": "COALMINE_ALERT_WEBHOOK_URL",
            "doc": "http(s) URL the worker POSTs each new alert to as JSON (a chat tool's "
            "incoming webhook); empty: none (secret: masked, such URLs often carry a token).",
            "secret": True,
        },
    )
    alert_webhook_token: str = field(
        default="",
        metadata={
            "env": "COALMINE_ALERT_WEBHOOK_TOKEN",
            "doc": "Sent as `Authorization: Bearer <token>` with each alert; empty: no header "
            "(secret: masked).",
            "secret": True,
        },
    )
    alert_webhook_timeout_s: float = field(
        default=5.0,
        metadata={
            "env": "COALMINE_ALERT_WEBHOOK_TIMEOUT_S",
            "doc": "How long one POST may take before it counts as failed (above 0, at most 60).",
            "range": Range(0, 60, low_open=True),
        },
    )
    alert_webhook_attempts: int = field(
        default=8,
        metadata={
            "env": "COALMINE_ALERT_WEBHOOK_ATTEMPTS",
            "doc": "POSTs of one alert before it is given up (backoff 1 s doubling to 30 s).",
            "range": Range(1, 1000),
        },
    )
    alert_webhook_queue: int = field(
        default=1000,
        metadata={
            "env": "COALMINE_ALERT_WEBHOOK_QUEUE",
            "doc": "Alerts waiting for the webhook at most; when full the oldest is dropped "
            "(counted in /health).",
            "range": Range(1, 1_000_000),
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

    def _completed(self) -> Self:
        # The home made absolute; the embedded database lives under it unless a URL is set.
        home = self.home.resolve()
        url = self.clickhouse_url or f"chdb://{home / 'chdb'}"
        return replace(self, home=home, clickhouse_url=url)

    def problem(self) -> str | None:
        return (
            super().problem() or _url_problem(self) or _otlp_problem(self) or _webhook_problem(self)
        )

    @property
    def is_embedded_clickhouse(self) -> bool:
        return self.clickhouse_url.startswith("chdb://")

    @property
    def chdb_path(self) -> Path:
        return Path(urlsplit(self.clickhouse_url).path)

    @property
    def consumer_group(self) -> str:
        return self.topic_prefix

    @property
    def aggregation_enabled(self) -> bool:
        return self.window_seconds > 0

    @property
    def detector_enabled(self) -> bool:
        return self.detector == "on" and self.aggregation_enabled

    @property
    def worker_url(self) -> str:
        return f"http://{self.worker_host}:{self.worker_port}"

    @property
    def otlp_agent_keys(self) -> tuple[str, ...]:
        return _attribute_list(self.otlp_agent_attributes)

    @property
    def otlp_version_keys(self) -> tuple[str, ...]:
        return _attribute_list(self.otlp_version_attributes)

    def masked(self) -> dict[str, str]:
        """Settings for display: secrets replaced by ``***``, and so are passwords and
        tokens in URLs."""
        return {**super().masked(), "COALMINE_CLICKHOUSE_URL": mask_url(self.clickhouse_url)}


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


_ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,255}")


def _attribute_list(value: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in value.split(",") if key.strip())


def _otlp_problem(s: Settings) -> str | None:
    for name, keys in (
        ("COALMINE_OTLP_AGENT_ATTRIBUTES", s.otlp_agent_keys),
        ("COALMINE_OTLP_VERSION_ATTRIBUTES", s.otlp_version_keys),
    ):
        if not keys:
            return f"{name} must name at least one attribute, e.g. service.name"
        bad = next((key for key in keys if not _ATTRIBUTE_KEY.fullmatch(key)), None)
        if bad is not None:
            return f"{name}: {bad!r} is not an attribute name (letters, digits, '.', '_', '-')"
    if not s.otlp_token and not is_loopback(s.otlp_host):
        return (
            f"COALMINE_OTLP_HOST={s.otlp_host} is reachable from other machines: set "
            "COALMINE_OTLP_TOKEN too, so that only your exporters can write spans"
        )
    return None


_HEADER_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")


def _webhook_problem(s: Settings) -> str | None:
    # The URL is never shown: a chat tool's webhook URL is itself the secret.
    url, token = s.alert_webhook_url, s.alert_webhook_token
    if not url:
        return (
            "COALMINE_ALERT_WEBHOOK_TOKEN is set but COALMINE_ALERT_WEBHOOK_URL is not"
            if token
            else None
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return "COALMINE_ALERT_WEBHOOK_URL is not a URL"
    if parts.scheme not in {"http", "https"} or not host:
        return "COALMINE_ALERT_WEBHOOK_URL must be an http:// or https:// URL with a host"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "COALMINE_ALERT_WEBHOOK_URL must not contain blanks or control characters"
    if token and not _HEADER_TOKEN.fullmatch(token):
        return "COALMINE_ALERT_WEBHOOK_TOKEN must be printable ASCII without blanks"
    if token and parts.scheme == "http" and not is_loopback(host):
        return (
            "COALMINE_ALERT_WEBHOOK_TOKEN would travel in clear over http:// to another "
            "machine: use an https:// URL"
        )
    return None


def environment_reference() -> str:
    """A markdown table of every variable; a test keeps the README's table in step with it."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = "" if f.default is None else str(f.default)
        rows.append(f"| `{f.metadata['env']}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)
