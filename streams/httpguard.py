"""Who may ask a local HTTP endpoint: the checks the worker's pages and the OTLP receiver
share, and the token files the worker's pages hand to their users. Standard library only, so
that the receiver needs no worker libraries."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from streams.errors import CoalmineError


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


def issue_token_file(path: Path) -> str:
    """A new random token, written to ``path`` readable by this user only (0600)."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.unlink(missing_ok=True)
    # Created 0600 before anything is written, then renamed over the old file: no moment
    # where the token sits in a file others may read, and a symlink planted there is replaced.
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(token)
    partial.replace(path)
    return token


def read_token_file(path: Path, reader: str) -> str:
    """The token :func:`issue_token_file` wrote; a :class:`CoalmineError` naming ``reader``
    (who needs it) when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CoalmineError(
            f"cannot read the worker's token {path} ({exc.strerror}); run {reader} as the "
            "user who runs the worker"
        ) from None
