"""A whole recipe on the tiny model (generate, validate, train, report), and the report's arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from build_side.distill.probe import ProbeJob, measure
from build_side.distill.recipe import load_recipe, run_from_recipe
from build_side.distill.records import TeacherRecord
from build_side.distill.report import plot, retention, to_markdown

REPO = Path(__file__).resolve().parents[2]
FACTS = [
    "Water boils at one hundred degrees at sea level.",
    "A week has seven days.",
    "The moon goes around the earth about once a month.",
    "Bees make honey from the nectar of flowers.",
    "Ice floats because it is lighter than liquid water.",
    "Plants turn sunlight into sugar.",
]


def test_shipped_recipe_is_valid() -> None:
    from build_side.recipe import load_recipe as load_pipeline_recipe

    path = REPO / "manifests" / "recipes" / "distill-smollm2.yaml"
    assert load_pipeline_recipe(path).distill is not None  # the build pipeline accepts it as well
    _, section = load_recipe(path)
    assert section.student.keep_layers == 12 and section.student.select == "block"
    assert section.generate.limit == 256
    prompts = section.path(section.prompts).read_text().splitlines()
    assert len(prompts) == 320 and len({json.loads(p)["prompt"] for p in prompts}) == 320
    assert section.path(section.report.task).is_file() and section.path(section.report.heldout_text).is_file()


def test_recipe_runs_all_three_stages(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": f"Tell me fact number {i}."}) + "\n" for i in range(10))
    )
    (tmp_path / "task.jsonl").write_text('{"question": "What is 2 + 2?", "answers": ["4", "four"]}\n')
    (tmp_path / "text.txt").write_text("The valley stations report wind and rain every ten minutes. " * 12)
    # A random-weight teacher answers with special tokens only (empty once decoded), so an earlier
    # "run" left six real answers; the recipe's teacher answers the other four, which validation drops.
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "teacher.jsonl").write_text(
        "".join(
            TeacherRecord(
                id=f"p{i}",
                input=f"Tell me fact number {i}.",
                teacher_output=FACTS[i],
                finish_reason="stop",
                generation={"chat": True},
                teacher={"kind": "earlier"},
            ).model_dump_json()
            + "\n"
            for i in range(6)
        )
    )
    section = {
        "prompts": "prompts.jsonl",
        "generate": {"max_new_tokens": 8, "batch_size": 5},
        "student": {"keep_layers": 1},
        "train": {
            "max_steps": 3,
            "batch_size": 2,
            "eval_interval": 2,
            "checkpoint_interval": 2,
            "val_fraction": 0.3,
            "max_seq_len": 64,
        },
        "report": {
            "heldout_text": "text.txt",
            "task": "task.jsonl",
            "task_max_new_tokens": 4,
            "speed_prompts": 1,
            "speed_new_tokens": 4,
            "speed_repeats": 1,
            "onnx_variant": None,
        },
    }
    lines: list[str] = []
    student = run_from_recipe(
        section, tiny_model_dir, out, recipe_dir=tmp_path, say=lines.append, progress=False
    )

    assert (student / "config.json").is_file() and (student / "distill_config.json").is_file()
    assert len((out / "data" / "teacher.jsonl").read_text().splitlines()) == 10
    counts = json.loads((out / "data" / "validation.json").read_text())["counts"]
    assert (counts["total"], counts["kept"], counts["empty"]) == (10, 6, 4)
    report = json.loads((out / "report" / "report.json").read_text())
    assert (out / "report" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report" / "report.md").read_text()
    assert report["headline"] in md and "inference time" in report["headline"]

    t, s = report["teacher"], report["student"]
    assert (t["layers"], s["layers"]) == (2, 1) and s["params"] < t["params"]
    for side in (t, s):
        speed = side["speed"]["torch"]
        assert speed["decode_tok_s"] > 0 and speed["ttft_ms"] > 0 and speed["runs"] == 1
        assert speed["peak_rss_mb"] > speed["model_rss_mb"] > 0
        assert side["task"]["total"] == 1
    q = report["quality"]
    assert q["heldout_text"]["tokens"] > 50 and q["heldout_text"]["teacher_perplexity"] > 1
    assert 0 <= q["heldout_text"]["top1_agreement"] <= 1 and q["heldout_text"]["kl_divergence"] >= 0
    assert q["heldout_prompts"]["records"] >= 1
    assert report["training"]["steps"] == 3 and report["training"]["val_loss_last"] is not None
    assert any("stage 3" in line for line in lines)

    before = (student / "model.safetensors").stat().st_mtime_ns
    again = run_from_recipe(
        {**section, "report": None},
        tiny_model_dir,
        out,
        recipe_dir=tmp_path,
        say=lines.append,
        progress=False,
    )
    assert again == student  # the teacher data is reused: nothing new is generated
    assert (student / "model.safetensors").stat().st_mtime_ns == before  # nor trained again
    assert len((out / "data" / "teacher.jsonl").read_text().splitlines()) == 10


def fake_report(with_onnx: bool) -> dict:
    def speed(tok_s: float, ttft: float, mem: float) -> dict:
        return {"decode_tok_s": tok_s, "ttft_ms": ttft, "model_rss_mb": mem, "peak_rss_mb": mem + 100}

    teacher = {
        "dir": "t",
        "layers": 30,
        "params": 134_500_000,
        "size_mb": 513.0,
        "speed": {"torch": speed(20.0, 200.0, 600.0)},
        "task": {"score": 0.5, "correct": 20, "total": 40},
    }
    student = {
        "dir": "s",
        "layers": 12,
        "params": 70_800_000,
        "size_mb": 270.0,
        "speed": {"torch": speed(40.0, 100.0, 300.0)},
        "task": {"score": 0.4, "correct": 16, "total": 40},
    }
    if with_onnx:
        teacher.update(onnx_size_mb=120.0)
        student.update(onnx_size_mb=70.0)
        teacher["speed"]["onnx"] = speed(100.0, 50.0, 200.0)
        student["speed"]["onnx"] = speed(250.0, 20.0, 40.0)
    quality = {
        "heldout_text": {
            "tokens": 500,
            "teacher_perplexity": 10.0,
            "student_perplexity": 20.0,
            "kl_divergence": 0.9,
            "top1_agreement": 0.6,
        },
        "heldout_prompts": {
            "records": 8,
            "tokens": 300,
            "teacher_perplexity": 1.5,
            "student_perplexity": 3.0,
            "kl_divergence": 0.7,
            "top1_agreement": 0.7,
        },
    }
    ret = {e: retention(teacher, student, e, (0.8, "task score")) for e in teacher["speed"]}
    return {
        "created": "now",
        "headline": ret["onnx" if with_onnx else "torch"]["headline"],
        "retention": ret,
        "teacher": teacher,
        "student": student,
        "quality": quality,
        "training": None,
        "settings": {"speed_new_tokens": 32, "speed_repeats": 2},
        "machine": {"cpu": "x", "cores": 2, "load_avg_1m": 1.0},
    }


def test_retention_in_the_case_study_form(tmp_path: Path) -> None:
    r = fake_report(with_onnx=True)
    onnx = r["retention"]["onnx"]
    assert onnx["inference_time_change_pct"] == pytest.approx(-60.0)  # 1/250 s against 1/100 s per token
    assert onnx["memory_change_pct"] == pytest.approx(-80.0)
    assert onnx["ttft_change_pct"] == pytest.approx(-60.0)
    assert onnx["size_change_pct"] == pytest.approx((70 / 120 - 1) * 100)
    assert r["headline"] == "inference time -60%, memory -80%, 80% of accuracy kept (task score; onnx)"
    assert r["retention"]["torch"]["inference_time_change_pct"] == pytest.approx(-50.0)

    from build_side.distill.report import general_verdict

    # 80% kept is under the bar (92%), though decode (2.5x) and memory (20%) meet it: not worth shipping
    r["verdict"] = general_verdict(r["teacher"], r["student"], "onnx", (0.8, "task score"))
    assert r["verdict"] == (
        "NOT WORTH SHIPPING: student: inference time -60%, memory -80%, 80% of task accuracy kept "
        "(task score 80%); misses the bar on: keep task score >= 92%"
    )
    md = to_markdown(r)
    assert f"**{r['verdict']}**" in md
    assert "| decode tok/s (onnx) | 100.0 | 250.0 | +150% |" in md
    assert "| task score | 20/40 | 16/40 | -20% |" in md
    plot(r, tmp_path / "r.png")
    plot(fake_report(with_onnx=False), tmp_path / "torch-only.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000 and (
        tmp_path / "torch-only.png"
    ).stat().st_size > 10_000


def test_onnx_probe_in_its_own_process(tiny_variants: dict[str, Path]) -> None:
    ballast = bytearray(512 * 2**20)  # this process grows by 512 MB; the child's figures must not
    ballast[::4096] = b"x" * len(ballast[::4096])
    job = ProbeJob(
        engine="onnx",
        model_dir=str(tiny_variants["cpu-int4"]),
        prompts=["Hi"],
        new_tokens=5,
        repeats=1,
        threads=1,
    )
    figures = measure(job, timeout_s=300)
    assert figures["runs"] == 1 and figures["decode_tok_s"] > 0 and figures["ttft_ms"] > 0
    assert 512 > figures["peak_rss_mb"] >= figures["baseline_rss_mb"] > 0
    del ballast
