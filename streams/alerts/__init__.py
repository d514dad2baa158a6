"""Alerts for people and tools: one readable line per alert (``coalmine alerts``), the
webhook's JSON with a chat-friendly ``text``, and the webhook sender the worker runs."""
