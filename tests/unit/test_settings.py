from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from streams.settings import Settings, SettingsError, environment_reference, mask_url


def test_defaults_are_embedded_and_local(tmp_path: Path) -> None:
    settings = Settings.from_env({"COALMINE_HOME": str(tmp_path)})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.clickhouse_url == f"chdb://{tmp_path.resolve()}/chdb"
    assert settings.is_embedded_clickhouse
    assert settings.chdb_path == tmp_path.resolve() / "chdb"
    assert settings.topic("traces") == "coalmine.traces"
    assert settings.worker_host == "127.0.0.1"


def test_values_are_parsed_by_type() -> None:
    settings = Settings.from_env(
        {
            "COALMINE_TRACES_PARTITIONS": "8",
            "COALMINE_BATCH_MAX_SECONDS": "0.25",
            "COALMINE_CLICKHOUSE_URL": "http://u:secret@db:8123/coalmine",
        }
    )
    assert settings.traces_partitions == 8
    assert settings.batch_max_seconds == 0.25
    assert not settings.is_embedded_clickhouse


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COALMINE_TRACES_PARTITIONS": "many"}, "COALMINE_TRACES_PARTITIONS must be an integer"),
        ({"COALMINE_TRACES_PARTITIONS": "0"}, "must be at least 1"),
        ({"COALMINE_CLICKHOUSE_URL": "postgres://x"}, "must start with chdb://"),
        ({"COALMINE_CLICKHOUSE_URL": "chdb://relative"}, "absolute path"),
        ({"COALMINE_BATCH_MAX_SECONDS": "-1"}, "must be positive"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_passwords_are_masked() -> None:
    assert mask_url("http://u:secret@db:8123/x") == "http://u:***@db:8123/x"
    masked = Settings.from_env({"COALMINE_CLICKHOUSE_URL": "https://u:pw@h:8443/x"}).masked()
    assert "pw" not in masked["COALMINE_CLICKHOUSE_URL"]


def test_every_setting_is_documented_in_the_reference_and_readme() -> None:
    reference = environment_reference()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for f in fields(Settings):
        assert f"`{f.metadata['env']}`" in reference
        assert f.metadata["env"] in readme, f"{f.metadata['env']} missing from README"
