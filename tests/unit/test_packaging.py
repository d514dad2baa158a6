"""The ``worker`` and ``otlp`` extras of pyproject.toml and the modules for which the command
line asks a base install (the SDK alone) to add them are the same packages."""

from __future__ import annotations

from collections import defaultdict
from importlib.metadata import packages_distributions, requires

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streams.cli import OTLP_EXTRA_MODULES, WORKER_EXTRA_MODULES


def extra(name: str) -> set[str]:
    """The distributions that ``coalmine[<name>]`` adds, from this checkout's metadata."""
    requirements = [Requirement(r) for r in requires("coalmine") or []]
    return {
        canonicalize_name(r.name)
        for r in requirements
        if r.marker is not None and r.marker.evaluate({"extra": name})
    }


def test_the_base_install_is_the_sdk() -> None:
    requirements = [Requirement(r) for r in requires("coalmine") or []]
    base = {canonicalize_name(r.name) for r in requirements if r.marker is None}
    assert base == {"confluent-kafka", "pydantic"}


@pytest.mark.parametrize(
    ("name", "known", "cli_modules"),
    [
        (
            "worker",
            {"faust-streaming", "chdb", "clickhouse-connect", "scipy"},
            WORKER_EXTRA_MODULES,
        ),
        ("otlp", {"opentelemetry-proto", "aiohttp"}, OTLP_EXTRA_MODULES),
    ],
)
def test_every_distribution_of_an_extra_has_a_module_the_cli_knows(
    name: str, known: set[str], cli_modules: frozenset[str]
) -> None:
    modules: dict[str, set[str]] = defaultdict(set)
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            modules[canonicalize_name(distribution)].add(module)
    added = extra(name)
    assert known <= added
    for distribution in added:
        assert modules[distribution] & cli_modules, distribution
