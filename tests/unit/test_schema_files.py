from __future__ import annotations

from schemas.export import expected_files


def test_published_json_schemas_are_up_to_date() -> None:
    for path, text in expected_files().items():
        assert path.exists(), f"{path.name} missing: run python -m schemas.export"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run python -m schemas.export"
        )
