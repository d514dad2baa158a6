"""What agent code imports: the :class:`Tracer`, the publishers that ship its spans, the
:class:`Router` that picks the version of each request, and their :class:`SdkSettings`.

It imports pydantic and confluent-kafka, never the worker's Faust, chDB or scipy (a test
checks): tracing an agent must not load the pipeline. Usage: ``from streams.sdk import
KafkaPublisher, SdkSettings, Tracer`` (see the README).
"""

from streams.sdk.approvals import (
    ApprovalDeniedError,
    ApprovalError,
    Approvals,
    ApprovalTimeoutError,
    ApprovalUnavailableError,
)
from streams.sdk.batching import BatchLimits
from streams.sdk.publisher import (
    CountingPublisher,
    DeliveryListener,
    KafkaPublisher,
    Publisher,
    PublisherStats,
)
from streams.sdk.router import Route, Router, RouterStats, RoutingTable
from streams.sdk.settings import SdkSettings, SettingsError
from streams.sdk.tracer import OutcomeSpan, RequestSpan, Span, Tracer

__all__ = [
    "ApprovalDeniedError",
    "ApprovalError",
    "ApprovalTimeoutError",
    "ApprovalUnavailableError",
    "Approvals",
    "BatchLimits",
    "CountingPublisher",
    "DeliveryListener",
    "KafkaPublisher",
    "OutcomeSpan",
    "Publisher",
    "PublisherStats",
    "RequestSpan",
    "Route",
    "Router",
    "RouterStats",
    "RoutingTable",
    "SdkSettings",
    "SettingsError",
    "Span",
    "Tracer",
]
