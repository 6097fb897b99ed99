"""Export the contracts as JSON Schema files (`python -m edge_agent.contracts.export [DIR]`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge_agent.contracts import SCHEMA_FILES

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "manifests" / "schemas"


def schema_texts() -> dict[str, str]:
    return {
        name: json.dumps(model.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"
        for name, model in SCHEMA_FILES.items()
    }


def export(directory: Path = DEFAULT_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_texts().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in export(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR):
        print(p)
