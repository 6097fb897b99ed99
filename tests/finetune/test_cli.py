"""`slmops finetune` from the command line: random search with its table, and data errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from build_side.cli.main import app

runner = CliRunner()  # in-process: the suite pays the import of torch and transformers once


def test_search_runs_trials_and_picks_the_lowest_validation_loss(
    tiny_model_dir: Path, task_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "search"
    args = ["finetune", str(tiny_model_dir), "--data", str(task_file), "--name", "colours", "--out", str(out)]
    args += ["--search", "2", "--max-steps", "4", "--eval-every", "2", "--max-new-tokens", "2"]
    proc = runner.invoke(app, args)
    assert proc.exit_code == 0, proc.output[-2000:]
    report = json.loads((out / "colours" / "search.json").read_text())
    trials = report["trials"]
    assert [t["trial"] for t in trials] == [1, 2]
    assert all(
        3e-5 <= t["lr"] <= 3e-3 and t["r"] in (4, 8, 16, 32) and t["batch_size"] in (4, 8, 16) for t in trials
    )
    assert len({(t["lr"], t["r"], t["batch_size"]) for t in trials}) == 2
    best = min(trials, key=lambda t: t["best_val_loss"])
    assert report["best"]["trial"] == best["trial"]
    assert report["best"]["before"]["loss"] > report["best"]["after"]["loss"]
    assert (out / "colours" / "adapter" / "adapter_config.json").is_file()
    assert "random search, 2 trials" in proc.stdout and f"* {best['trial']}" in proc.stdout  # the table


def test_bad_data_is_one_clear_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": "c", "answer": "d"}\n')
    proc = runner.invoke(
        app, ["finetune", str(tiny_model_dir), "--data", str(bad), "--out", str(tmp_path / "o")]
    )
    assert proc.exit_code == 1
    assert f"Error: {bad}:2: output: missing (the response template uses {{output}})" in proc.stderr
    assert "Traceback" not in proc.output
