"""Who may ask a local HTTP endpoint: the checks the worker's ``/sql`` page and the OTLP
receiver share. Standard library only, so that the receiver needs no worker libraries."""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit


def host_allowed(host: str, bind_host: str, port: int) -> bool:
    """Whether a ``Host`` header names this server: its port, and its bind address, an IP
    address or ``localhost``. Never another name, which is what DNS rebinding sends."""
    try:
        parts = urlsplit(f"//{host}")
        host_port = parts.port
    except ValueError:
        return False
    name = parts.hostname or ""
    if host_port != port:
        return False
    if name in (bind_host.lower(), "localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(bind_host: str) -> bool:
    """Whether ``bind_host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if bind_host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind_host).is_loopback
    except ValueError:
        return False


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <token>``, compared in constant time."""
    scheme, _, presented = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.encode(), token.encode())
