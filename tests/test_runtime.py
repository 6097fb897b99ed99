"""The runtime loads a real ONNX variant in onnxruntime-genai and generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ModelRuntimeError
from edge_agent.runtime import GenerationParams, LoadedModel


def test_tiny_variant_generates(tiny_variants: dict[str, Path]) -> None:
    model = LoadedModel(tiny_variants["cpu-int4"])
    pieces = list(model.stream(model.encode("hello"), GenerationParams(max_new_tokens=5)))
    assert len(pieces) == 5


def test_broken_variant_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "genai_config.json").write_text("{not json")
    with pytest.raises(ModelRuntimeError, match="could not load"):
        LoadedModel(tmp_path)
