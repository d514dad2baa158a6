"""OpenTelemetry in: the OTLP/HTTP receiver (``coalmine otlp``), its wire format, the span
mapping and its benchmark."""
