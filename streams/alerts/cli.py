"""``coalmine alerts [--follow] [--agent A] [--since T] [--json]``: its arguments; the
reading is :mod:`streams.alerts.show`'s, imported when the command runs (building the
``coalmine`` parser loads none of it)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streams.alerts.since import parse_since

if TYPE_CHECKING:
    from streams.settings import Settings


def since_argument(text: str) -> datetime:
    """The argparse ``type`` of ``--since`` (one line naming the option on bad input)."""
    try:
        return parse_since(text, datetime.now(UTC))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_alerts_parser(commands: Any) -> None:
    """Add ``alerts`` to the ``coalmine`` subcommands."""
    text = "the alerts on coalmine.alerts, one line each; --follow: as they happen"
    alerts = commands.add_parser("alerts", help=text, description=text)
    alerts.add_argument("--follow", "-f", action="store_true", help="keep printing new alerts")
    alerts.add_argument("--agent", help="only this agent's alerts")
    alerts.add_argument(
        "--since",
        type=since_argument,
        help="from this moment: a duration back from now (30s, 10m, 2h, 3d, 1w) or an ISO "
        "time (2026-12-02T13:00:00Z); default: every alert the topic holds",
    )
    alerts.add_argument("--json", action="store_true", help="one JSON alert per line")
    alerts.set_defaults(handler=_alerts)


def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    from streams.alerts import show  # noqa: PLC0415

    selection = show.Selection(agent=args.agent, since=args.since)
    return show.run(settings, selection, follow=args.follow, as_json=args.json)
