"""The SDK's own settings: where its spans go, how it reaches the cluster, how much it queues.

:class:`SdkSettings` comes from arguments (``SdkSettings(kafka_bootstrap="b1:9092")``) or from
the ``COALMINE_*`` environment variables (:meth:`SdkSettings.from_env`). The worker's
:class:`streams.settings.Settings` extends it with the pipeline's own variables, so each
variable is defined once (here or there), parsed and validated once, and a ``Settings``
is accepted wherever ``SdkSettings`` is. This module needs only the standard library.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self

from schemas.topics import Topic

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
MASK = "***"
# Kafka's legal topic characters; a topic name may have 249 characters, and every suffix of
# the registry (schemas/topics.py) fits after 200 (tests/unit/test_topic_registry.py).
_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,200}")
QUEUE_MAX_MESSAGES = 100_000
QUEUE_MAX_KBYTES = 65_536
"""The bounds of the publisher's send queue unless set."""
ROUTER_STARTUP_WAIT_S = 5.0
ROUTER_FETCH_WAIT_MS = 100
# librdkafka's upper bound of both queue.buffering.max.messages and .kbytes.
_LIBRDKAFKA_INT_MAX = 2_147_483_647


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
class SdkSettings:
    """What the SDK reads, with the environment variable that sets each one in its metadata
    (``env``, ``doc``, and optionally ``range``, ``choices``, ``secret``)."""

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
    topic_prefix: str = field(
        default="coalmine",
        metadata={
            "env": "COALMINE_TOPIC_PREFIX",
            "doc": "Prefix of every topic and the consumer group.",
        },
    )
    sdk_queue_max_messages: int = field(
        default=QUEUE_MAX_MESSAGES,
        metadata={
            "env": "COALMINE_SDK_QUEUE_MAX_MESSAGES",
            "doc": "Spans an agent's publisher holds unsent before it drops new ones.",
            "range": Range(1, _LIBRDKAFKA_INT_MAX),
        },
    )
    sdk_queue_max_kbytes: int = field(
        default=QUEUE_MAX_KBYTES,
        metadata={
            "env": "COALMINE_SDK_QUEUE_MAX_KBYTES",
            "doc": "Kilobytes of spans an agent's publisher holds unsent before it drops new ones.",
            "range": Range(1, _LIBRDKAFKA_INT_MAX),
        },
    )

    sdk_router_startup_wait_s: float = field(
        default=ROUTER_STARTUP_WAIT_S,
        metadata={
            "env": "COALMINE_SDK_ROUTER_STARTUP_WAIT_S",
            "doc": "Seconds a new router's first routes wait for the deployment state before "
            "they fall back to the caller's default version.",
            "range": Range(0, 300),
        },
    )
    sdk_router_fetch_wait_ms: int = field(
        default=ROUTER_FETCH_WAIT_MS,
        metadata={
            "env": "COALMINE_SDK_ROUTER_FETCH_WAIT_MS",
            "doc": "Longest a router's idle fetch waits at the broker (fetch.wait.max.ms).",
            "range": Range(1, 60_000),
        },
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
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
        settings = cls(**values)._completed()
        settings.validate()
        return settings

    def _completed(self) -> Self:
        """These settings with the defaults that depend on other values filled in."""
        return self

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first variable whose value cannot work."""
        problem = self.problem()
        if problem is not None:
            raise SettingsError(problem)

    def problem(self) -> str | None:
        """What is wrong with these settings, as one line naming the variable, or None."""
        for f in fields(self):
            name, value = f.metadata["env"], getattr(self, f.name)
            allowed: Range | None = f.metadata.get("range")
            if allowed is not None and value not in allowed:
                return f"{name} must be {allowed.describe()}, not {value!r}"
            choices: tuple[str, ...] = f.metadata.get("choices", ())
            if choices and value not in choices:
                return f"{name} must be one of {', '.join(choices)}, not {value!r}"
        return _naming_problem(self) or _kafka_security_problem(self)

    def topic(self, topic: Topic) -> str:
        """Full topic name: ``topic(TRACES)`` → ``coalmine.traces``."""
        return topic.full_name(self.topic_prefix)

    def as_env(self) -> dict[str, str]:
        """These settings as ``COALMINE_*`` variables, for a child process (secrets included)."""
        return {
            f.metadata["env"]: str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    def masked(self) -> dict[str, str]:
        """Settings for display, secrets replaced by ``***``."""
        shown = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                shown[f.metadata["env"]] = MASK if value else ""
            else:
                shown[f.metadata["env"]] = str(value)
        return shown

    def __repr__(self) -> str:
        # Settings end up in tracebacks, test reports and debug logs: never show a secret
        # there. Subclasses must keep this (``@dataclass(repr=False)``).
        return f"{type(self).__name__}({self.masked()})"


def _naming_problem(s: SdkSettings) -> str | None:
    if not _TOPIC_PREFIX.fullmatch(s.topic_prefix):
        return (
            "COALMINE_TOPIC_PREFIX must be 1 to 200 letters, digits, '.', '_' or '-' "
            f"(a Kafka topic name), not {s.topic_prefix!r}"
        )
    return None


def _kafka_security_problem(s: SdkSettings) -> str | None:
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
