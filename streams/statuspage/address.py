"""Where the status page is and the token it asks for: what the worker logs at start, and
what ``coalmine demo`` prints. Standard library only, so that tools need not import Faust."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from streams.httpguard import is_loopback, read_token_file
from streams.settings import Settings


def token_file(settings: Settings) -> Path:
    """Written by the worker at start, readable by its user only (0600)."""
    return settings.home / "page-token"


def read_token(settings: Settings) -> str:
    return read_token_file(token_file(settings), "this command")


def page_url(settings: Settings, token: str) -> str:
    """The address a person opens, with the token in it (as Jupyter logs its own). A worker
    listening on every address is reached on loopback from its own machine."""
    host = settings.worker_host if is_loopback(settings.worker_host) else "127.0.0.1"
    return f"http://{host}:{settings.worker_port}/?token={quote(token)}"
