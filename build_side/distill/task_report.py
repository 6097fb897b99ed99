"""Stage 3 of a task distillation: teacher and every student on the held-out set, on the variant
devices run (int4), their decode speed in one `bench compare` run (teacher as baseline) and their
model memory (a probe per model); then the verdict against the bar. report.json, report.md, and
report.png (held-out score against decode speed, one point per student and the teacher).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from build_side.distill.config import DistillRecipe, SkillSettings
from build_side.distill.report import machine_info, write_report
from build_side.distill.verdict import Bar, Figures, choose, judge
from edge_agent.errors import DistillError

TEACHER = "teacher"


def score_onnx(
    onnx_dir: Path, skills: list[tuple[SkillSettings, str | None]], requests: list[Any]
) -> dict[str, Any]:
    """Held-out scores of one ONNX model, greedy, per skill (the system prompt it is asked with)."""
    from functools import partial

    from build_side.finetune.export_adapters import AdapterSession
    from build_side.tasks import ops

    session = AdapterSession(onnx_dir, {})
    out: dict[str, Any] = {}
    for skill, system in skills:

        def ask(request: Any, system: str | None, n: int) -> str:
            return session.answer(request.input, None, system=system, max_new_tokens=n)

        got = ops.score_skill(skill.name, requests, partial(ask, system=system, n=skill.max_new_tokens))
        out[skill.name] = got.model_dump()
    return out


def bench_compare(
    onnx_dirs: list[Path], scenario: str, reps: int, threads: int | None, out: Path
) -> list[dict[str, Any]]:
    """One `bench compare` run over the folders (the first is the baseline); its rows in that order."""
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "compare",
        "-s",
        scenario,
        "-n",
        str(reps),
        "--no-quality",
        "--no-save",
    ]
    cmd += [a for d in onnx_dirs for a in ("--onnx", str(d))]
    if threads:
        cmd += ["-t", str(threads)]
    cmd += ["-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if not out.is_file():
        raise DistillError(f"bench compare failed ({done.returncode}): {done.stderr[-2000:]}")
    import statistics

    from edge_agent.contracts.bench_record import BenchRecord

    records = [BenchRecord.model_validate(r) for r in json.loads(out.read_text())]
    if len(records) != len(onnx_dirs):
        raise DistillError(f"bench compare returned {len(records)} records for {len(onnx_dirs)} cases")
    base = records[0].metrics.get("decode_tok_s")
    rows = []
    for r in records:  # `x base` as bench compare computes it: the median of per-repetition ratios
        s = r.metrics.get("decode_tok_s")
        paired = None
        if s and base and len(s.samples) == len(base.samples) and all(base.samples):
            paired = statistics.median(x / y for x, y in zip(s.samples, base.samples, strict=True))
        rows.append(
            {
                "model": r.model,
                "decode_tok_s": s.median if s else None,
                "decode_x_base": paired,
                "peak_rss_mb": r.peak_rss_mb,
                "error": r.error,
            }
        )
    return rows


def build_task_report(
    recipe: DistillRecipe,
    teachers: dict[str, tuple[Path, str | None]],
    students: dict[str, Path],
    out_dir: Path,
    say: Any = print,
) -> dict[str, Any]:
    from build_side.distill.probe import ProbeJob, measure
    from build_side.distill.report import to_onnx
    from build_side.tasks import ops

    task = recipe.task
    assert task is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    requests = ops.load_requests(recipe.path(task.heldout))
    requests = requests[: task.heldout_limit] if task.heldout_limit else requests
    variant = task.variant

    # ---- the teacher: each skill's teacher (base + adapter merged) as the variant
    teacher_onnx = {
        name: to_onnx(path, out_dir / "onnx" / f"teacher-{name}", variant)
        for name, (path, _) in teachers.items()
    }
    say(f"report: teacher on {len(requests)} held-out requests ({variant})")
    t_scores: dict[str, Any] = {}
    for skill in task.skills:
        t_scores.update(score_onnx(teacher_onnx[skill.name], [(skill, teachers[skill.name][1])], requests))
    student_onnx = {name: to_onnx(path, out_dir / "onnx" / name, variant) for name, path in students.items()}
    s_scores: dict[str, dict[str, Any]] = {}
    for name, onnx_dir in student_onnx.items():
        say(f"report: student {name} on the held-out set ({variant})")
        asked = [
            (s, s.student_system if s.student_system is not None else teachers[s.name][1])
            for s in task.skills
        ]
        s_scores[name] = score_onnx(onnx_dir, asked, requests)

    # ---- speed: one bench compare, teacher first (the baseline); memory: one probe per model
    speed_teacher = teacher_onnx[task.skills[0].name]  # every skill's teacher has the same shape
    order = [(TEACHER, speed_teacher), *student_onnx.items()]
    say("report: bench compare (decode speed, teacher as baseline)")
    rows = bench_compare(
        [d for _, d in order], task.speed_scenario, task.speed_reps, task.threads, out_dir / "bench.json"
    )
    probe_prompts = [r.input for r in requests[:2]]
    memory: dict[str, dict[str, Any]] = {}
    for name, d in order:
        say(f"report: memory of {name}")
        memory[name] = measure(
            ProbeJob(
                engine="onnx",
                model_dir=str(d),
                prompts=probe_prompts,
                new_tokens=16,
                repeats=1,
                threads=task.threads,
            )
        )

    def figures(name: str, scores: dict[str, Any], row: dict[str, Any]) -> Figures:
        return Figures(
            name=name,
            scores={k: v["score"] for k, v in scores.items()},
            valid_json=scores.get("command", {}).get("valid_json"),
            decode_tok_s=row.get("decode_tok_s"),
            speedup=row.get("decode_x_base"),
            model_rss_mb=memory[name].get("model_rss_mb"),
        )

    teacher_fig = figures(TEACHER, t_scores, rows[0])
    student_figs = [figures(n, s_scores[n], row) for n, row in zip(student_onnx, rows[1:], strict=True)]
    bar = Bar(**task.bar.model_dump())
    chosen = choose(teacher_fig, student_figs, bar)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "verdict": chosen.model_dump(),
        "bar": bar.model_dump(),
        "variant": variant,
        "heldout": {"file": str(recipe.path(task.heldout)), "requests": len(requests)},
        "teacher": {
            **teacher_fig.model_dump(),
            "details": t_scores,
            "onnx": {k: str(v) for k, v in teacher_onnx.items()},
        },
        "students": [
            {
                **f.model_dump(),
                "verdict": judge(teacher_fig, f, bar).model_dump(),
                "details": s_scores[f.name],
                "onnx": str(student_onnx[f.name]),
                "training": _training(students[f.name]),
            }
            for f in student_figs
        ],
        "bench_compare": rows,
        "memory": memory,
        "machine": machine_info(),
    }
    write_report(out_dir, report, to_markdown, plot)
    return report


def _training(student_dir: Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads((student_dir / "distill_config.json").read_text())
    except (OSError, ValueError):
        return None
    s = cfg.get("student", {})
    return {
        "kept_layers": s.get("kept_layers"),
        "mlp_channels": s.get("mlp_channels"),
        "steps": cfg.get("final", {}).get("step"),
        "val": cfg.get("final", {}).get("val"),
        "records": cfg.get("records"),
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _num(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def to_markdown(r: dict[str, Any]) -> str:
    t = r["teacher"]
    skills = list(t["scores"])
    head = [
        "model",
        *[f"{s} (held-out)" for s in skills],
        "valid JSON",
        "decode tok/s",
        "x base",
        "model MB",
        "kept (worst)",
        "ship",
    ]
    lines = [
        "# Task distillation report",
        "",
        f"**{r['verdict']['line']}**",
        "",
        f"Bar: keep >= {r['bar']['keep']:.0%} of the teacher's {r['variant']} score on every skill, decode >= "
        f"{r['bar']['speedup']:g}x the teacher's (one bench compare, teacher as baseline), model memory <= "
        f"{r['bar']['memory']:.0%} of the teacher's. Held-out: {r['heldout']['requests']} requests from {r['heldout']['file']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    rows = [(t, None)] + [(s, s["verdict"]) for s in r["students"]]
    for f, v in rows:
        cells = [
            f["name"],
            *[_pct(f["scores"].get(s)) for s in skills],
            _pct(f.get("valid_json")),
            _num(f.get("decode_tok_s")),
            _num(f.get("speedup"), ".2f"),
            _num(f.get("model_rss_mb")),
            "-" if v is None else _pct(min(v["kept"].values())),
            "-" if v is None else ("yes" if v["ship"] else "no"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Students", ""]
    for s in r["students"]:
        tr = s.get("training") or {}
        lines.append(
            f"- {s['name']}: layers {tr.get('kept_layers')}, MLP channels {tr.get('mlp_channels') or 'all'}, "
            f"{tr.get('steps')} steps; {s['verdict']['line']}"
        )
    m = r["machine"]
    lines += [
        "",
        f"Measured {r['created']} on {m['cpu']} ({m['cores']} cores, load average {m['load_avg_1m']:.1f} at the end; "
        "a shared machine: speed figures are paired ratios within one run, absolute tok/s vary with the load). "
        "Model memory = peak RSS minus the process before loading the model (one probe process per model).",
        "",
        "![score against decode speed](report.png)",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    """Held-out score against decode speed, one panel per skill, one point per model; the dashed line
    is the bar (the teacher's score times `keep`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [r["teacher"], *r["students"]]
    skills = list(r["teacher"]["scores"])
    fig, axes = plt.subplots(1, len(skills), figsize=(6 * len(skills), 4.5), squeeze=False)
    for ax, skill in zip(axes[0], skills, strict=True):
        for m in models:
            x, y = m.get("decode_tok_s") or 0.0, m["scores"].get(skill, 0.0)
            ax.scatter([x], [y], s=60, marker="*" if m["name"] == TEACHER else "o")
            ax.annotate(m["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        t = r["teacher"]["scores"].get(skill, 0.0)
        ax.axhline(t * r["bar"]["keep"], ls="--", lw=0.8, color="grey")
        ax.set_xlabel("decode tok/s (int4, bench compare)")
        ax.set_ylabel(f"{skill} held-out score")
        ax.set_title(skill)
    fig.suptitle(r["verdict"]["line"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
