"""``coalmine versions register | list | show | diff``: thin adapters over the registry and
the pure parts. A bad file, an unknown agent or version, a refused registration: one line
(``coalmine: error: ...``) and exit code 2, from :func:`streams.cli.main`.

Handlers import what they use when they run, as :mod:`streams.cli` does: building the parser
(every ``coalmine`` command) loads none of it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from streams.errors import CoalmineError

if TYPE_CHECKING:
    from streams.settings import Settings
    from streams.versions.catalog import VersionCatalog


def add_versions_parser(commands: Any) -> None:
    """Add ``versions`` and its actions to the ``coalmine`` subcommands (``commands``: what
    ``add_subparsers`` returned)."""
    versions = commands.add_parser(
        "versions", help="immutable agent versions: register, list, show, diff"
    )
    actions = versions.add_subparsers(dest="versions_command", required=True, metavar="ACTION")

    text = "register a version file (YAML or JSON); the same content again changes nothing"
    register = actions.add_parser("register", help=text, description=text)
    register.add_argument("file", type=Path, help="e.g. examples/versions/support-bot-v1.yaml")
    register.add_argument("--created-by", help="who registers it (default: your user name)")
    register.set_defaults(handler=_register)

    text = "an agent's versions, oldest first"
    listing = actions.add_parser("list", help=text, description=text)
    listing.add_argument("agent")
    listing.set_defaults(handler=_list)

    text = "one version in full: prompts, model, tools, guardrails, knowledge bases"
    show = actions.add_parser("show", help=text, description=text)
    show.add_argument("agent")
    show.add_argument("version")
    show.add_argument("--json", action="store_true", help="the version record as JSON")
    show.set_defaults(handler=_show)

    text = "what changed from version A to version B"
    diff = actions.add_parser("diff", help=text, description=text)
    diff.add_argument("agent")
    diff.add_argument("a", metavar="A")
    diff.add_argument("b", metavar="B")
    diff.set_defaults(handler=_diff)


def _register(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from streams.versions.catalog import Decision
    from streams.versions.load import describe_validation_error, parse_version_file, read_file
    from streams.versions.registry import VersionRegistry

    path: Path = args.file
    found = parse_version_file(read_file(path), str(path))
    created_by = args.created_by if args.created_by is not None else _user()
    try:
        candidate = found.as_version(datetime.now(UTC), created_by)
    except ValidationError as exc:
        raise CoalmineError(f"--created-by: {describe_validation_error(exc)}") from None
    registered = VersionRegistry(settings).register(candidate)
    name = f"{candidate.agent} {candidate.version}"
    if registered.decision is Decision.NEW:
        _print([f"registered {name} ({candidate.digest})"])
    else:
        first = registered.version
        _print(
            [
                f"{name} is already registered with this content ({first.digest}, by "
                f"{first.created_by} at {first.created_at.isoformat(timespec='seconds')}); "
                "nothing to do"
            ]
        )
    return 0


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container), no USER variable
        return "unknown"


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from streams.versions.text import version_table

    _print(version_table(_catalog(settings, args.agent).require_agent(args.agent)))
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from streams.versions.text import version_details

    version = _catalog(settings, args.agent).require(args.agent, args.version)
    if args.json:
        print(version.model_dump_json(indent=2))
    else:
        _print(version_details(version))
    return 0


def _diff(args: argparse.Namespace, settings: Settings) -> int:
    from streams.versions.diff import diff_versions

    catalog = _catalog(settings, args.agent)
    _print(diff_versions(catalog.require(args.agent, args.a), catalog.require(args.agent, args.b)))
    return 0


def _catalog(settings: Settings, agent: str) -> VersionCatalog:
    """The versions on the topic now; conflicts naming ``agent``'s labels are warned about."""
    from streams.versions.registry import VersionRegistry

    catalog = VersionRegistry(settings).catalog()
    for conflict in catalog.conflicts:
        if conflict.key.rpartition("/")[0] == agent:
            _print(
                [
                    f"coalmine: warning: {conflict.key} was registered again with other "
                    f"content ({conflict.refused_digest}, offset {conflict.offset}); it names "
                    f"{conflict.kept_digest}, its first content"
                ],
                sys.stderr,
            )
    return catalog


def _print(lines: Iterable[str], to: TextIO = sys.stdout) -> None:
    from streams.versions.text import printable

    for line in lines:
        print(printable(line), file=to)
