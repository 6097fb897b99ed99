"""The endpoint teacher against a real local OpenAI-compatible HTTP server, through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from build_side.distill.config import GenerationSettings
from build_side.distill.records import read_records
from build_side.distill.teachers import OpenAITeacher
from tests.conftest import cli


def test_cli_generate_with_endpoint_teacher(openai_peer, prompts_file: Path, tmp_path: Path) -> None:
    url, app = openai_peer
    out = tmp_path / "teacher.jsonl"
    argv = cli("slmops", "distill", "generate", "--prompts", str(prompts_file), "--out", str(out))
    argv += ["--teacher-url", url, "--teacher-model", "peer-model", "--batch-size", "3", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["prompts"], result["written"]) == (6, 6)
    assert result["validation"] == {
        "total": 6,
        "kept": 2,
        "empty": 1,
        "truncated": 2,
        "too_long": 0,
        "repetitive": 0,
        "duplicate": 1,
    }
    records = {r.id: r for r in read_records(out)}
    assert records["a"].teacher_output == "Answer to: What is 2 + 2?"
    assert records["a"].teacher == {"kind": "openai", "url": f"{url}/v1", "model": "peer-model"}
    assert records["c"].finish_reason == "length"
    assert len(app.state.requests) == 6
    assert app.state.requests[0]["max_tokens"] == 128

    again = subprocess.run(argv, capture_output=True, text=True, timeout=120)  # resumable: nothing to do
    assert json.loads(again.stdout)["written"] == 0 and len(app.state.requests) == 6


def test_endpoint_teacher_plain_completions_and_system(openai_peer) -> None:
    url, app = openai_peer
    teacher = OpenAITeacher(url + "/v1", "m")
    settings = GenerationSettings(chat=False, max_new_tokens=5)
    assert [c.text for c in teacher.complete(["x1", "x2"], settings)] == ["Answer to: x1", "Answer to: x2"]
    teacher.complete(["hello"], GenerationSettings(system="Be brief."))
    assert app.state.requests[-1]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_unreachable_endpoint_is_a_clear_error(prompts_file: Path, tmp_path: Path) -> None:
    argv = cli(
        "slmops", "distill", "generate", "--prompts", str(prompts_file), "--out", str(tmp_path / "o.jsonl")
    )
    argv += ["--teacher-url", "http://127.0.0.1:9", "--teacher-model", "m"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "teacher endpoint http://127.0.0.1:9/v1" in proc.stderr and "Traceback" not in proc.stderr


def test_endpoint_timeouts_and_malformed_answers_are_counted_retried_and_reported(
    openai_peer, tmp_path: Path
) -> None:
    from build_side.distill.generate import generate_records
    from build_side.distill.records import Prompt

    url, app = openai_peer
    teacher = OpenAITeacher(url, "m", timeout_s=0.5, retries=2)
    prompts = [
        Prompt(id="ok", prompt="fine"),
        Prompt(id="s", prompt="slow one"),
        Prompt(id="m", prompt="malformed"),
    ]
    out = tmp_path / "t.jsonl"
    result = generate_records(teacher, prompts, out, GenerationSettings(batch_size=3))
    # "slow" timed out twice and answered on its third try; "malformed" failed all three and is left out
    assert (result.written, result.failed) == (2, 1)
    assert result.failures == {"timeout": 2, "malformed": 3, "gave_up": 1}
    assert sorted(r.id for r in read_records(out)) == ["ok", "s"]
    assert app.state.tries["malformed"] == 3  # the bound: 1 + 2 retries
    import pytest

    from edge_agent.errors import DistillError

    # the rerun asks only "m" again: a batch with no answer at all is an error that names the counts
    with pytest.raises(DistillError, match="failed every prompt of a batch after 3 tries each"):
        generate_records(teacher, prompts, out, GenerationSettings(batch_size=3))
    assert sorted(r.id for r in read_records(out)) == ["ok", "s"]  # nothing lost
