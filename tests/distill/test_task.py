"""A task distillation end to end on the tiny model: stage 1 per skill with stored top-k, two
students (depth, width), the held-out report on int4 with bench compare and the verdict; a second
run redoes nothing; bad input fails before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from build_side.distill.recipe import parse_section
from edge_agent.errors import DataError, DistillError

HELDOUT = [
    {
        "input": "restart kiosk-1",
        "intent": "restart",
        "command": {"action": "restart", "target": "device:kiosk-1"},
    },
    {"input": "logs of cam-2", "intent": "logs", "command": {"action": "logs", "target": "device:cam-2"}},
]


def section(tmp_path: Path, **over) -> dict:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(json.dumps({"id": f"r{i}", "prompt": f"reboot unit-{i}"}) + "\n" for i in range(12))
    )
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(h) + "\n" for h in HELDOUT))
    base = {
        "prompts": str(requests),
        "generate": {
            "batch_size": 6,
            "top_logprobs": 4,
            "threads": 1,
            "chat": False,
        },  # random weights: no template
        "validate": {"drop_truncated": False, "drop_duplicates": False},
        "task": {
            "heldout": str(heldout),
            "skills": [
                {"name": "intent", "system": "Classify.", "student_system": "intent", "max_new_tokens": 4},
                {"name": "command", "system": "As JSON.", "max_new_tokens": 3},
            ],
            "speed_scenario": "pp8-tg4",
            "speed_reps": 1,
            "threads": 1,
        },
        "students": [{"keep_layers": 1}, {"name": "narrow", "mlp_channels": 32}],
        "train": {
            "max_steps": 2,
            "batch_size": 4,
            "eval_interval": 1,
            "eval_batches": 1,
            "checkpoint_interval": 1,
            "threads": 1,
        },
        "report": None,
    }
    return {**base, **over}


@pytest.mark.slow
def test_task_run_end_to_end_and_the_second_run_skips(tiny_model_dir: Path, tmp_path: Path) -> None:
    from build_side.distill.recipe import run_from_recipe
    from build_side.distill.records import read_records

    out = tmp_path / "out"
    said: list[str] = []
    student = run_from_recipe(section(tmp_path), tiny_model_dir, out, say=said.append, progress=False)
    assert (student / "config.json").is_file()
    for skill in ("intent", "command"):
        records = read_records(out / "data" / f"teacher-{skill}.jsonl")
        assert len(records) == 12 and all(r.topk_ids and len(r.topk_ids[0]) == 4 for r in records)
    assert read_records(out / "data" / "teacher-command.jsonl")[0].generation["system"] == "As JSON."
    trained = json.loads((out / "students" / "l1" / "train" / "distill_config.json").read_text())
    assert trained["records"]["train"] + trained["records"]["val"] == 24  # both skills
    report = json.loads((out / "report" / "report.json").read_text())
    assert [s["name"] for s in report["students"]] == ["l1", "narrow"]
    assert report["bench_compare"][0]["decode_x_base"] == pytest.approx(1.0)
    assert all(s["speedup"] is not None and s["model_rss_mb"] is not None for s in report["students"])
    # random weights answer nothing right: no student can keep what the teacher does not have
    assert report["verdict"]["ship"] is False and "NOT WORTH SHIPPING" in report["verdict"]["line"]
    md = (out / "report" / "report.md").read_text()
    assert report["verdict"]["line"] in md and (out / "report" / "report.png").stat().st_size > 1000

    said.clear()
    run_from_recipe(section(tmp_path), tiny_model_dir, out, say=said.append, progress=False)
    assert not any(line.startswith("stage 1 (") for line in said)  # no teacher call the second time


def test_bad_input_fails_before_any_work(tiny_model_dir: Path, tmp_path: Path) -> None:
    from build_side.distill.recipe import run_from_recipe

    out = tmp_path / "out"
    with pytest.raises(DistillError, match="cannot keep 9 of 2 layers"):
        run_from_recipe(section(tmp_path, students=[{"keep_layers": 9}]), tiny_model_dir, out, progress=False)
    with pytest.raises(DistillError, match="greater than or equal to 1"):
        parse_section(section(tmp_path, students=[{"mlp_channels": 0}]))
    sec = section(tmp_path)
    Path(sec["task"]["heldout"]).write_text(json.dumps(HELDOUT[0]) + '\n{"input": "x", "intent": "dance"}\n')
    with pytest.raises(DataError) as err:
        run_from_recipe(sec, tiny_model_dir, out, progress=False)
    assert "heldout.jsonl" in str(err.value) and ":2" in str(err.value) and "intent" in str(err.value)
    assert not (out / "data").exists()  # nothing ran
