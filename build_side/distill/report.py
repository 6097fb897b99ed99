"""Stage 3: teacher against student, written as report.json, report.md and report.png.

Quality comes from `quality` (one process, both models), speed and memory from `probe` (one process
per model and engine). The retention line follows the method's case study, "inference time -85%,
memory -95%, 92% of accuracy kept":
- inference time: the student's per-token decode time against the teacher's;
- memory: the model's share of peak RSS (peak minus the process before loading), student vs teacher;
- accuracy kept: the student's task score over the teacher's where the recipe names a task, else the
  student's top-1 agreement with the teacher on held-out prompts (the basis is stated beside it).
The headline uses the ONNX figures when both ONNX variants were given (what a device runs), else torch.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from build_side.distill.config import ReportSettings, resolve_path
from build_side.distill.probe import ProbeJob, measure
from build_side.distill.quality import answer_quality, as_dict, read_task, task_score, text_quality
from build_side.distill.records import TeacherRecord
from build_side.distill.teachers import TransformersTeacher
from edge_agent.errors import DistillError
from edge_agent.evaluation import size_on_disk

DEFAULT_HELDOUT_TEXT = "manifests/eval/heldout.txt"
FALLBACK_PROMPTS = [
    "What is the capital of France?",
    "Give two tips to sleep better.",
    "Explain what a battery does.",
]


def _change(new: float | None, old: float | None) -> float | None:
    """Relative change in percent (-85.0 means 85 % less)."""
    if new is None or old is None or old == 0:
        return None
    return (new / old - 1.0) * 100.0


def _weights_mb(model_dir: Path) -> float:
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors")) / 2**20


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors are counted once


def retention(
    teacher: dict[str, Any], student: dict[str, Any], engine: str, accuracy: tuple[float, str]
) -> dict[str, Any]:
    t, s = teacher["speed"][engine], student["speed"][engine]
    size_key = "onnx_size_mb" if engine == "onnx" else "size_mb"
    kept, basis = accuracy
    out = {
        "engine": engine,
        "inference_time_change_pct": _change(t["decode_tok_s"], s["decode_tok_s"]),  # time per token
        "ttft_change_pct": _change(s["ttft_ms"], t["ttft_ms"]),
        "memory_change_pct": _change(s["model_rss_mb"], t["model_rss_mb"]),
        "peak_rss_change_pct": _change(s["peak_rss_mb"], t["peak_rss_mb"]),
        "size_change_pct": _change(student[size_key], teacher[size_key]),
        "accuracy_kept_pct": kept * 100.0,
        "accuracy_basis": basis,
    }
    out["headline"] = (
        f"inference time {out['inference_time_change_pct']:+.0f}%, memory {out['memory_change_pct']:+.0f}%, "
        f"{out['accuracy_kept_pct']:.0f}% of accuracy kept ({basis}; {engine})"
    )
    return out


def general_verdict(
    teacher: dict[str, Any], student: dict[str, Any], engine: str, accuracy: tuple[float, str]
) -> str:
    """The ship verdict against the task bar (distill.verdict), the accuracy kept as one skill."""
    from build_side.distill.verdict import Bar, Figures, judge

    t, s = teacher["speed"][engine], student["speed"][engine]
    kept, basis = accuracy
    return judge(
        Figures(
            name="teacher",
            scores={basis: 1.0},
            decode_tok_s=t["decode_tok_s"],
            model_rss_mb=t["model_rss_mb"],
        ),
        Figures(
            name="student",
            scores={basis: kept},
            decode_tok_s=s["decode_tok_s"],
            model_rss_mb=s["model_rss_mb"],
        ),
        Bar(),
    ).line


def build_report(
    teacher_dir: Path,
    student_dir: Path,
    out_dir: Path,
    settings: ReportSettings,
    heldout_records: list[TeacherRecord],
    train_dir: Path | None = None,
    teacher_onnx: Path | None = None,
    student_onnx: Path | None = None,
    base_dir: Path | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    records = heldout_records[: settings.max_heldout_records]
    text_path = resolve_path(settings.heldout_text or DEFAULT_HELDOUT_TEXT, base_dir)
    if not text_path.is_file():
        raise DistillError(f"held-out text {text_path} not found")

    # ---- quality: both models in this process, full precision
    say("report: quality on held-out text and prompts")
    t_model = TransformersTeacher(teacher_dir, threads=settings.threads)
    s_model = TransformersTeacher(student_dir, threads=settings.threads)
    quality: dict[str, Any] = {
        "heldout_text": {
            "file": str(text_path),
            **as_dict(text_quality(t_model, s_model, text_path.read_text())),
        }
    }
    if records:
        quality["heldout_prompts"] = {
            "records": len(records),
            **as_dict(answer_quality(t_model, s_model, records)),
        }
    teacher: dict[str, Any] = {
        "dir": str(teacher_dir),
        "layers": t_model.model.config.num_hidden_layers,
        "params": _params(t_model.model),
        "size_mb": _weights_mb(teacher_dir),
        "speed": {},
    }
    student: dict[str, Any] = {
        "dir": str(student_dir),
        "layers": s_model.model.config.num_hidden_layers,
        "params": _params(s_model.model),
        "size_mb": _weights_mb(student_dir),
        "speed": {},
    }
    if settings.task:
        say("report: task score")
        items = read_task(resolve_path(settings.task, base_dir))
        teacher["task"] = task_score(t_model, items, settings.task_max_new_tokens)
        student["task"] = task_score(s_model, items, settings.task_max_new_tokens)
    del t_model, s_model

    # ---- speed and memory: one process per model and engine, ONNX too when asked for
    if settings.onnx_variant and not (teacher_onnx and student_onnx):
        say(f"report: converting teacher and student to {settings.onnx_variant}")
        teacher_onnx = to_onnx(teacher_dir, out_dir / "onnx" / "teacher", settings.onnx_variant)
        student_onnx = to_onnx(student_dir, out_dir / "onnx" / "student", settings.onnx_variant)
    prompts = [r.input for r in records[: settings.speed_prompts]] or FALLBACK_PROMPTS[
        : settings.speed_prompts
    ]
    runs = [("torch", teacher, teacher_dir), ("torch", student, student_dir)]
    if teacher_onnx and student_onnx:
        teacher["onnx_dir"], student["onnx_dir"] = str(teacher_onnx), str(student_onnx)
        teacher["onnx_size_mb"], student["onnx_size_mb"] = (
            size_on_disk(teacher_onnx) / 2**20,
            size_on_disk(student_onnx) / 2**20,
        )
        runs += [("onnx", teacher, teacher_onnx), ("onnx", student, student_onnx)]
    for engine, side, path in runs:
        say(f"report: speed and memory, {engine} {'teacher' if side is teacher else 'student'}")
        job = ProbeJob(
            engine=engine,
            model_dir=str(path),
            prompts=prompts,
            new_tokens=settings.speed_new_tokens,
            repeats=settings.speed_repeats,
            threads=settings.threads,
        )
        side["speed"][engine] = measure(job)

    # ---- retention, in the case study's words
    if "task" in teacher and teacher["task"]["score"] > 0:
        accuracy = (student["task"]["score"] / teacher["task"]["score"], "task score")
    elif "heldout_prompts" in quality:
        accuracy = (quality["heldout_prompts"]["top1_agreement"], "top-1 agreement")
    else:
        accuracy = (quality["heldout_text"]["top1_agreement"], "top-1 agreement")
    engines = [e for e in ("onnx", "torch") if e in teacher["speed"]]
    ret = {e: retention(teacher, student, e, accuracy) for e in engines}
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "headline": ret[engines[0]]["headline"],
        "verdict": general_verdict(teacher, student, engines[0], accuracy),
        "retention": ret,
        "teacher": teacher,
        "student": student,
        "quality": quality,
        "training": training_summary(train_dir) if train_dir else None,
        "settings": settings.model_dump(),
        "machine": machine_info(),
    }
    write_report(out_dir, report, to_markdown, plot)
    return report


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: a report's timings mean little without the machine's load."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }


def write_report(
    out_dir: Path,
    report: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], None],
) -> None:
    """The three forms every distill report ships in: report.json, report.md and report.png."""
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "report.md").write_text(markdown(report))
    plot(report, out_dir / "report.png")


def to_onnx(hf_dir: Path, out: Path, variant: str) -> Path:
    """One variant through `build_side.convert` (the onnxruntime-genai builder); reused when the same
    folder was converted before (the teacher does not change between runs)."""
    from build_side.convert import convert, parse_variant
    from edge_agent.contracts import SourceInfo

    stamp = out / "source.txt"
    done = out / variant / "genai_config.json"
    key = f"{hf_dir.resolve()}|{sum(f.stat().st_mtime_ns for f in hf_dir.glob('*.safetensors'))}"
    if done.exists() and stamp.exists() and stamp.read_text() == key:
        return out / variant
    convert(hf_dir, [parse_variant(variant)], out, SourceInfo(kind="hf-folder", ref=str(hf_dir)))
    stamp.write_text(key)
    return out / variant


def training_summary(train_dir: Path) -> dict[str, Any] | None:
    cfg_file, metrics_file = train_dir / "distill_config.json", train_dir / "metrics.jsonl"
    if not cfg_file.exists():
        return None
    cfg = json.loads(cfg_file.read_text())
    rows = (
        [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.exists() else []
    )
    val = [r for r in rows if "val_loss" in r]
    return {
        "steps": cfg.get("final", {}).get("step"),
        "student": cfg.get("student"),
        "records": cfg.get("records"),
        "validation": cfg.get("validation"),
        "train": {
            k: cfg["train"][k]
            for k in ("temperature", "alpha", "learning_rate", "batch_size", "grad_accum", "max_seq_len")
        },
        "val_loss_first": val[0]["val_loss"] if val else None,
        "val_loss_last": val[-1]["val_loss"] if val else None,
        "curve": rows,
    }


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def to_markdown(r: dict[str, Any]) -> str:
    t, s = r["teacher"], r["student"]
    lines = [
        "# Distillation report: teacher against student",
        "",
        f"**{r['headline']}**",
        "",
        *([f"**{r['verdict']}**", ""] if r.get("verdict") else []),
        f"Teacher: `{t['dir']}` ({t['layers']} layers, {t['params'] / 1e6:.1f} M parameters). "
        f"Student: `{s['dir']}` ({s['layers']} layers, {s['params'] / 1e6:.1f} M parameters).",
        "",
        "| | teacher | student | change |",
        "| --- | ---: | ---: | ---: |",
        f"| parameters (M) | {t['params'] / 1e6:.1f} | {s['params'] / 1e6:.1f} | {_fmt(_change(s['params'], t['params']), '+.0f')}% |",
        f"| weights on disk, fp32 (MB) | {t['size_mb']:.1f} | {s['size_mb']:.1f} | {_fmt(_change(s['size_mb'], t['size_mb']), '+.0f')}% |",
    ]
    if "onnx_size_mb" in t:
        lines.append(
            f"| ONNX variant on disk (MB) | {t['onnx_size_mb']:.1f} | {s['onnx_size_mb']:.1f} | "
            f"{_fmt(_change(s['onnx_size_mb'], t['onnx_size_mb']), '+.0f')}% |"
        )
    for engine in t["speed"]:
        ts, ss = t["speed"][engine], s["speed"][engine]
        lines += [
            f"| decode tok/s ({engine}) | {ts['decode_tok_s']:.1f} | {ss['decode_tok_s']:.1f} | {_fmt(_change(ss['decode_tok_s'], ts['decode_tok_s']), '+.0f')}% |",
            f"| TTFT ms ({engine}) | {ts['ttft_ms']:.0f} | {ss['ttft_ms']:.0f} | {_fmt(_change(ss['ttft_ms'], ts['ttft_ms']), '+.0f')}% |",
            f"| model memory MB ({engine}) | {ts['model_rss_mb']:.0f} | {ss['model_rss_mb']:.0f} | {_fmt(_change(ss['model_rss_mb'], ts['model_rss_mb']), '+.0f')}% |",
            f"| peak RSS MB ({engine}) | {ts['peak_rss_mb']:.0f} | {ss['peak_rss_mb']:.0f} | {_fmt(_change(ss['peak_rss_mb'], ts['peak_rss_mb']), '+.0f')}% |",
        ]
    q = r["quality"]
    ht = q["heldout_text"]
    lines.append(
        f"| perplexity, held-out text | {ht['teacher_perplexity']:.2f} | {ht['student_perplexity']:.2f} | "
        f"{_fmt(_change(ht['student_perplexity'], ht['teacher_perplexity']), '+.0f')}% |"
    )
    if "heldout_prompts" in q:
        hp = q["heldout_prompts"]
        lines.append(
            f"| perplexity, teacher's held-out answers | {hp['teacher_perplexity']:.2f} | {hp['student_perplexity']:.2f} | "
            f"{_fmt(_change(hp['student_perplexity'], hp['teacher_perplexity']), '+.0f')}% |"
        )
    if "task" in t:
        lines.append(
            f"| task score | {t['task']['correct']}/{t['task']['total']} | {s['task']['correct']}/{s['task']['total']} | "
            f"{_fmt(_change(s['task']['score'], t['task']['score']), '+.0f')}% |"
        )
    lines += [
        "",
        "Student against teacher (next-token distributions):",
        "",
        "| on | tokens | top-1 agreement | KL(teacher ‖ student) |",
        "| --- | ---: | ---: | ---: |",
        f"| held-out text | {ht['tokens']} | {ht['top1_agreement']:.3f} | {ht['kl_divergence']:.3f} |",
    ]
    if "heldout_prompts" in q:
        lines.append(
            f"| held-out prompts ({hp['records']}) | {hp['tokens']} | {hp['top1_agreement']:.3f} | {hp['kl_divergence']:.3f} |"
        )
    lines += ["", "Retention by engine:", ""]
    lines += [f"- {e}: {v['headline']}" for e, v in r["retention"].items()]
    tr = r.get("training")
    if tr:
        lines += [
            "",
            f"Training: {tr['steps']} steps on {tr['records']['train']} records ({tr['records']['val']} held out), "
            f"student {tr['student']}, settings {tr['train']}; validation loss {_fmt(tr['val_loss_first'], '.3f')} -> "
            f"{_fmt(tr['val_loss_last'], '.3f')}. Teacher outputs: {tr['validation']}.",
        ]
    m = r["machine"]
    lines += [
        "",
        f"Measured {r['created']} on {m['cpu']} ({m['cores']} cores, load average {m['load_avg_1m']:.1f} at the end); "
        f"speed: greedy, {r['settings']['speed_new_tokens']} new tokens (EOS ignored), median of "
        f"{r['settings']['speed_repeats']} runs per prompt after a warm-up, each model in its own process. "
        "Model memory = peak RSS minus the process before loading the weights.",
        "",
        "![report](report.png)",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, s = r["teacher"], r["student"]
    engines = list(t["speed"])
    panels: list[tuple[str, list[str], list[float], list[float]]] = [
        (
            "decode tok/s (higher is better)",
            engines,
            [t["speed"][e]["decode_tok_s"] for e in engines],
            [s["speed"][e]["decode_tok_s"] for e in engines],
        ),
        (
            "TTFT ms",
            engines,
            [t["speed"][e]["ttft_ms"] for e in engines],
            [s["speed"][e]["ttft_ms"] for e in engines],
        ),
        (
            "model memory MB",
            engines,
            [t["speed"][e]["model_rss_mb"] for e in engines],
            [s["speed"][e]["model_rss_mb"] for e in engines],
        ),
        (
            "size on disk MB",
            ["fp32", *(["onnx"] if "onnx_size_mb" in t else [])],
            [t["size_mb"], *([t["onnx_size_mb"]] if "onnx_size_mb" in t else [])],
            [s["size_mb"], *([s["onnx_size_mb"]] if "onnx_size_mb" in s else [])],
        ),
    ]
    q = r["quality"]
    ppl_labels, t_ppl, s_ppl = (
        ["text"],
        [q["heldout_text"]["teacher_perplexity"]],
        [q["heldout_text"]["student_perplexity"]],
    )
    if "heldout_prompts" in q:
        ppl_labels.append("answers")
        t_ppl.append(q["heldout_prompts"]["teacher_perplexity"])
        s_ppl.append(q["heldout_prompts"]["student_perplexity"])
    panels.append(("perplexity, held-out", ppl_labels, t_ppl, s_ppl))
    if "task" in t:
        panels.append(("task score", ["score"], [t["task"]["score"]], [s["task"]["score"]]))
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    axes = axes.ravel()
    for ax, (title, labels, tv, sv) in zip(axes, panels, strict=False):
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], tv, 0.4, label="teacher", color="#4c72b0")
        ax.bar([i + 0.2 for i in x], sv, 0.4, label="student", color="#dd8452")
        ax.set_xticks(list(x), labels)
        ax.set_title(title, fontsize=10)
    axes[0].legend()
    curve_ax = axes[len(panels)]
    tr = r.get("training") or {}
    rows = tr.get("curve") or []
    if rows:
        train_rows, val_rows = [x for x in rows if "loss" in x], [x for x in rows if "val_loss" in x]
        curve_ax.plot(
            [x["step"] for x in train_rows], [x["loss"] for x in train_rows], label="train loss", alpha=0.6
        )
        curve_ax.plot(
            [x["step"] for x in val_rows], [x["val_loss"] for x in val_rows], "o-", label="val loss"
        )
        curve_ax.set_title("distillation loss", fontsize=10)
        curve_ax.set_xlabel("step")
        curve_ax.legend()
    for ax in axes[len(panels) + (1 if rows else 0) :]:
        ax.axis("off")
    fig.suptitle(r["headline"], fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
