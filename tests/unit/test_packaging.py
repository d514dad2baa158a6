"""The ``worker`` extra of pyproject.toml and the modules for which the command line asks a
base install (the SDK alone) to add it are the same packages."""

from __future__ import annotations

from collections import defaultdict
from importlib.metadata import packages_distributions, requires

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streams.cli import WORKER_EXTRA_MODULES


def worker_extra() -> set[str]:
    """The distributions that ``coalmine[worker]`` adds, from this checkout's metadata."""
    requirements = [Requirement(r) for r in requires("coalmine") or []]
    return {
        canonicalize_name(r.name)
        for r in requirements
        if r.marker is not None and r.marker.evaluate({"extra": "worker"})
    }


def test_the_base_install_is_the_sdk() -> None:
    requirements = [Requirement(r) for r in requires("coalmine") or []]
    base = {canonicalize_name(r.name) for r in requirements if r.marker is None}
    assert base == {"confluent-kafka", "pydantic"}


def test_every_distribution_of_the_worker_extra_has_a_module_the_cli_knows() -> None:
    modules: dict[str, set[str]] = defaultdict(set)
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            modules[canonicalize_name(distribution)].add(module)
    extra = worker_extra()
    assert {"faust-streaming", "chdb", "clickhouse-connect", "scipy"} <= extra
    for distribution in extra:
        assert modules[distribution] & WORKER_EXTRA_MODULES, distribution
