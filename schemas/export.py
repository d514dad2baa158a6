"""JSON Schema files for every published event, generated from the pydantic models of the
topics in :mod:`schemas.topics`.

Run ``python -m schemas.export`` after changing a model; a test fails while the files under
``schemas/json/`` are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.topics import TOPICS

PUBLISHED: dict[str, type[BaseModel]] = {
    topic.value.schema: topic.value.load() for topic in TOPICS if topic.value is not None
}
"""Every model published on a topic, by the name of its schema file."""
SCHEMA_DIR = Path(__file__).resolve().parent / "json"


def render(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(mode="serialization")
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def expected_files() -> dict[Path, str]:
    return {SCHEMA_DIR / f"{name}.schema.json": render(m) for name, m in PUBLISHED.items()}


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path, text in expected_files().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(SCHEMA_DIR.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
