"""The Grafana files, without Grafana (no Docker here): the expansion of tests/grafana.py against
the plugin's own cases, and the provisioning wired to docker-compose.yml and the dashboard."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.grafana import (
    DATASOURCE_TYPE,
    QueryRange,
    apply_variables,
    dashboard_queries,
    expand_macros,
)
from tests.unit.test_compose import _environment

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"

# The range of the plugin's macros_test.go: 2014-11-12T11:45:26.371Z .. 2015-11-12T11:45:26.371Z.
RANGE = QueryRange(
    datetime(2014, 11, 12, 11, 45, 26, 371000, tzinfo=UTC),
    datetime(2015, 11, 12, 11, 45, 26, 371000, tzinfo=UTC),
    interval_s=20.0,
)
# The jsonData keys LoadSettings reads (pkg/plugin/settings.go, v4.20.0) that a provisioning
# file of this kind may set; a key outside them would be ignored without a word.
PLUGIN_JSON_DATA_KEYS = {
    "host",
    "port",
    "protocol",
    "secure",
    "path",
    "username",
    "defaultDatabase",
    "dialTimeout",
    "queryTimeout",
    "tlsSkipVerify",
    "customSettings",
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "coalmine.json").read_text())
    return loaded


@pytest.fixture(scope="module")
def grafana_service() -> dict[str, Any]:
    service: dict[str, Any] = _yaml(ROOT / "docker-compose.yml")["services"]["grafana"]
    return service


# --- the expansion, on the plugin's and Grafana's own examples ------------------------------


@pytest.mark.parametrize(
    ("sql", "expanded"),
    [
        (
            "select * from foo where $__timeFilter(cast(sth as timestamp))",
            "select * from foo where cast(sth as timestamp) >= toDateTime(1415792726) "
            "AND cast(sth as timestamp) <= toDateTime(1447328726)",
        ),
        (
            "select * from foo where $__timeFilter(cast(sth as timestamp) )",
            "select * from foo where cast(sth as timestamp) >= toDateTime(1415792726) "
            "AND cast(sth as timestamp) <= toDateTime(1447328726)",
        ),
        (
            "select * from foo where ( date >= $__fromTime and date <= $__toTime ) limit 100",
            "select * from foo where ( date >= toDateTime(1415792726) and "
            "date <= toDateTime(1447328726) ) limit 100",
        ),
        (
            "select * from foo where $__timeFilter(coalesce(closed_at, $__toTime))",
            "select * from foo where coalesce(closed_at, toDateTime(1447328726)) >= "
            "toDateTime(1415792726) AND coalesce(closed_at, toDateTime(1447328726)) <= "
            "toDateTime(1447328726)",
        ),
        ("$__timeInterval(col)", "toStartOfInterval(toDateTime(col), INTERVAL 20 second)"),
        ("SELECT 1", "SELECT 1"),
    ],
)
def test_macros_expand_as_the_plugin_s_tests_say(sql: str, expanded: str) -> None:
    assert expand_macros(sql, RANGE) == expanded


def test_the_interval_is_whole_seconds_and_at_least_one() -> None:
    for interval_s, seconds in ((0.2, 1), (59.9, 59), (300.0, 300)):
        query_range = QueryRange(RANGE.time_from, RANGE.time_to, interval_s)
        assert expand_macros("$__timeInterval(t)", query_range).endswith(
            f"INTERVAL {seconds} second)"
        )


@pytest.mark.parametrize(
    "sql", ["$__timeFilter_ms(t)", "$__timeGroup(t, 5m)", "$__timeFilter(a, b)", "$__timeFilter(t"]
)
def test_a_macro_not_modelled_or_malformed_raises(sql: str) -> None:
    with pytest.raises(ValueError):
        expand_macros(sql, RANGE)


def test_variables_are_replaced_as_grafana_does() -> None:
    variables = {"agent": "it's\\ bot ü", "rollout_id": "cmd-1"}
    sql = "a = '${agent:percentencode}' AND r = '${rollout_id}' AND s = '$rollout_id' $__fromTime"
    # Grafana's encodeURIComponentStrict("it's\\ bot ü"): quote and backslash are bytes too.
    assert apply_variables(sql, variables) == (
        "a = 'it%27s%5C%20bot%20%C3%BC' AND r = 'cmd-1' AND s = 'cmd-1' $__fromTime"
    )
    assert apply_variables("[[rollout_id]] [[agent:percentencode]]", variables) == (
        "cmd-1 it%27s%5C%20bot%20%C3%BC"
    )
    assert apply_variables("${unknown} $other", variables) == "${unknown} $other"
    with pytest.raises(ValueError):
        apply_variables("${agent:singlequote}", variables)


# --- the dashboard --------------------------------------------------------------------------


def test_every_query_is_sql_for_the_provisioned_data_source(dashboard: dict[str, Any]) -> None:
    provisioned = _yaml(GRAFANA / "provisioning" / "datasources" / "coalmine.yaml")
    uids = {source["uid"] for source in provisioned["datasources"]}
    queries = list(dashboard_queries(dashboard))
    assert len(queries) == 2 + len(dashboard["panels"])  # two variables, one query a panel
    for query in queries:
        assert query.datasource == {"type": DATASOURCE_TYPE, "uid": query.datasource["uid"]}
        assert query.datasource["uid"] in uids, query.where
        # Not modelled by tests/grafana.py (macropro strips comments before expanding).
        assert "--" not in query.raw_sql and "/*" not in query.raw_sql, query.where
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["editorType"] == "sql", panel["title"]
            # sqlds: 0 makes a long frame wide (a series per version or metric), 1 is a table.
            assert target["format"] == (0 if panel["type"] == "timeseries" else 1), panel["title"]
    variables = dashboard["templating"]["list"]
    assert [v["name"] for v in variables] == ["agent", "rollout_id"]
    assert not any(v["multi"] or v["includeAll"] for v in variables)  # not modelled either


def test_the_data_source_points_at_the_compose_clickhouse(grafana_service: dict[str, Any]) -> None:
    compose = _yaml(ROOT / "docker-compose.yml")["services"]
    clickhouse = _environment(compose["clickhouse"])
    (source,) = _yaml(GRAFANA / "provisioning" / "datasources" / "coalmine.yaml")["datasources"]
    assert source["type"] == DATASOURCE_TYPE
    settings = source["jsonData"]
    assert set(settings) <= PLUGIN_JSON_DATA_KEYS
    assert settings["host"] in compose and settings["host"] in grafana_service["depends_on"]
    assert (settings["protocol"], settings["port"]) == ("http", 8123)
    assert "127.0.0.1:8123:8123" in compose[settings["host"]]["ports"]
    assert settings["username"] == clickhouse["CLICKHOUSE_USER"]
    assert source["secureJsonData"]["password"] == clickhouse["CLICKHOUSE_PASSWORD"]
    assert settings["defaultDatabase"] == clickhouse["CLICKHOUSE_DB"]


def test_the_provisioned_folder_is_where_compose_mounts_the_dashboards(
    grafana_service: dict[str, Any],
) -> None:
    (provider,) = _yaml(GRAFANA / "provisioning" / "dashboards" / "coalmine.yaml")["providers"]
    assert provider["type"] == "file"
    mounts = dict(volume.split(":")[:2] for volume in grafana_service["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    folder = ROOT / next(
        source for source, target in mounts.items() if target == provider["options"]["path"]
    )
    assert folder == GRAFANA / "dashboards"
    assert sorted(path.name for path in folder.iterdir()) == ["coalmine.json"]
    env = _environment(grafana_service)
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == (
        f"{provider['options']['path']}/coalmine.json"
    )
    assert env["GF_PLUGINS_PREINSTALL_SYNC"].split("@")[0] == DATASOURCE_TYPE
