"""`slmops distill`: a teacher writes training data, a smaller student learns from it, a report compares.

Thin over `build_side.distill`: options become settings, the library does the work, typed errors
become messages (FriendlyErrors). Heavy imports happen inside the commands.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from build_side.cli.output import console, print_json, table

distill_app = typer.Typer(
    help=(
        "Knowledge distillation, teacher to student: `generate` (the teacher answers prompts), "
        "`validate` (filter its answers), `train` (the student learns), `report` (teacher against "
        "student), or `run` a whole recipe."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(distill_app, name="distill")


def _validation_table(counts: dict[str, int], title: str) -> None:
    rows = [[k.replace("_", " "), v] for k, v in counts.items()]
    console.print(table(title, ["outputs", "count"], rows))


@distill_app.command("generate")
def generate(
    prompts: Path = typer.Option(..., "--prompts", help='JSONL of {"id", "prompt"} lines.', exists=True),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL the teacher's records are appended to."),
    teacher: str = typer.Option(
        None, "--teacher", help="A local model source: HF folder, GGUF file, hub id or smollm2-135m-instruct."
    ),
    teacher_url: str = typer.Option(
        None, "--teacher-url", help="An OpenAI-compatible endpoint instead, e.g. http://127.0.0.1:8000/v1."
    ),
    teacher_model: str = typer.Option(None, "--teacher-model", help="The model name the endpoint serves."),
    api_key: str = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="The endpoint's API key."),
    max_new_tokens: int = typer.Option(
        128, help="Token limit per answer (an answer reaching it is truncated)."
    ),
    temperature: float = typer.Option(0.0, help="0 = greedy."),
    top_p: float = typer.Option(1.0),
    batch_size: int = typer.Option(8, help="Prompts per teacher call (concurrent requests for an endpoint)."),
    system: str = typer.Option(None, help="A system message for every prompt."),
    limit: int = typer.Option(None, help="Only the first N prompts."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(None, help="torch threads for a local teacher."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run the teacher over PROMPTS in batches and append {id, input, teacher_output, ...} to OUT.

    Resumable: prompt ids already in OUT are skipped, so run the same command again after an
    interruption. The answers are then validated and the counts shown (nothing is deleted from OUT;
    training applies the same filters).
    """
    from build_side.distill.config import GenerationSettings, ValidationSettings
    from build_side.distill.generate import generate_records
    from build_side.distill.progress import bar
    from build_side.distill.records import completed_ids, read_prompts, read_records
    from build_side.distill.teachers import open_teacher
    from build_side.distill.validate import validate

    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        system=system,
        limit=limit,
        seed=seed,
        threads=threads,
    )
    items = read_prompts(prompts, limit)
    with console.status("loading the teacher ..."):
        t = open_teacher(teacher, teacher_url, teacher_model, api_key, threads)
    done = len({p.id for p in items} & completed_ids(out))
    with bar("teacher answering", total=len(items), done=done, enabled=not json_out) as advance:
        result = generate_records(t, items, out, settings, advance)
    wanted = {p.id for p in items}
    counts = validate([r for r in read_records(out) if r.id in wanted], ValidationSettings()).counts()
    if json_out:
        print_json(
            {
                "out": str(out),
                "prompts": result.total,
                "skipped": result.skipped,
                "written": result.written,
                "failed": result.failed,
                "failures": result.failures or {},
                "validation": counts,
            }
        )
        return
    console.print(f"{result.written} new answers, {result.skipped} already there -> {out}")
    if result.failed or result.failures:
        console.print(
            f"[yellow]{result.failed} prompts without an answer after the retries (a rerun asks again); "
            f"teacher failures: {result.failures}[/yellow]"
        )
    _validation_table(counts, "teacher outputs (default filters)")


@distill_app.command("validate")
def validate_cmd(
    records: Path = typer.Argument(..., help="The teacher's JSONL from `distill generate`.", exists=True),
    kept: Path = typer.Option(None, "--kept", help="Also write the records that pass to this JSONL."),
    max_chars: int = typer.Option(2000, help="Longer answers are too long."),
    ngram: int = typer.Option(4, help="Word n-gram size for the loop detector."),
    max_repeated: float = typer.Option(
        0.3, help="Largest share of repeated n-grams before an answer is repetitive."
    ),
    keep_truncated: bool = typer.Option(False, help="Keep answers that hit the token limit."),
    keep_duplicates: bool = typer.Option(False, help="Keep answers identical to an earlier one."),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Count the teacher's answers that are empty, truncated, too long, repetitive or duplicated."""
    from build_side.distill.config import ValidationSettings
    from build_side.distill.records import read_records, write_records
    from build_side.distill.validate import validate

    settings = ValidationSettings(
        max_chars=max_chars,
        ngram=ngram,
        max_repeated_ngram_fraction=max_repeated,
        drop_truncated=not keep_truncated,
        drop_duplicates=not keep_duplicates,
    )
    result = validate(read_records(records), settings)
    if kept:
        write_records(kept, result.kept)
    if json_out:
        print_json({"counts": result.counts(), "rejected": result.rejected})
    else:
        _validation_table(result.counts(), f"teacher outputs in {records.name}")


@distill_app.command("train")
def train_cmd(
    data: Path = typer.Option(
        ..., "--data", help="The teacher's JSONL from `distill generate`.", exists=True
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; the student lands in OUT/student."),
    teacher: str = typer.Option(..., "--teacher", help="The teacher model source (the one that wrote DATA)."),
    keep_layers: int = typer.Option(
        None, help="Derive the student: keep this many teacher layers, evenly spaced."
    ),
    select: str = typer.Option(
        "even",
        help="With --keep-layers: 'even' (spaced out) or 'block' (drop the contiguous block that moves the outputs least).",
    ),
    layers: str = typer.Option(None, help="Derive the student from these teacher layers, e.g. 0,4,8,12."),
    student: str = typer.Option(
        None, help="Or a given smaller model source sharing the teacher's tokenizer."
    ),
    steps: int = typer.Option(100, help="Optimizer steps."),
    batch_size: int = typer.Option(8, help="Sequences per micro-batch (per process)."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    lr: float = typer.Option(3e-4, help="Peak learning rate (linear warm-up, then cosine)."),
    warmup: int = typer.Option(10, help="Warm-up steps."),
    temperature: float = typer.Option(2.0, help="Distillation temperature T (KL scaled by T^2)."),
    alpha: float = typer.Option(0.5, help="loss = alpha * KL + (1 - alpha) * CE on the teacher's answers."),
    max_seq_len: int = typer.Option(256, help="Longest prompt + answer in tokens."),
    freeze_embeddings: bool = typer.Option(False, help="Keep the teacher's (tied) embeddings fixed."),
    eval_interval: int = typer.Option(20, help="Steps between validation losses."),
    checkpoint_interval: int = typer.Option(20, help="Steps between checkpoints."),
    seed: int = typer.Option(1337),
    threads: int = typer.Option(None, help="torch threads."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train a student on the teacher's validated answers (KL at temperature T + CE, weighted by alpha).

    Resumable: an interrupted run continues from OUT/checkpoint with the same options. For several
    GPUs: `accelerate launch -m build_side distill train ...` (each process takes its own batches).
    """
    from build_side.distill.config import StudentSpec, TrainSettings, ValidationSettings
    from build_side.distill.progress import bar
    from build_side.distill.records import read_records
    from build_side.distill.train import train
    from build_side.distill.validate import validate
    from build_side.sources import prepare

    spec = StudentSpec(
        source=student,
        keep_layers=keep_layers,
        select=select,
        layers=[int(x) for x in layers.split(",")] if layers else None,
    )
    cfg = TrainSettings(
        max_steps=steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        learning_rate=lr,
        min_lr=lr / 10,
        warmup_steps=warmup,
        temperature=temperature,
        alpha=alpha,
        max_seq_len=max_seq_len,
        freeze_embeddings=freeze_embeddings,
        eval_interval=eval_interval,
        checkpoint_interval=checkpoint_interval,
        seed=seed,
        threads=threads,
    )
    result = validate(read_records(data), ValidationSettings())
    if not json_out:
        _validation_table(result.counts(), "teacher outputs used for training")
    with console.status(f"preparing {teacher} ..."):
        teacher_dir = prepare(teacher).path
    context = {"teacher": result.kept[0].teacher if result.kept else {}, "validation": result.counts()}
    with bar("student learning", steps, enabled=not json_out) as advance:
        trained = train(result.kept, teacher_dir, spec, cfg, out, context, advance)
    if os.environ.get("RANK", "0") != "0":  # under torchrun/accelerate launch, one process reports
        return
    if json_out:
        print_json(
            {"student": str(trained.student_dir), "steps": trained.steps, "val_loss": trained.val_loss}
        )
    else:
        console.print(
            f"student after {trained.steps} steps, val loss {trained.val_loss:.4f} -> {trained.student_dir}"
        )


def _print_report(report: dict) -> None:
    t, s = report["teacher"], report["student"]
    rows = []
    for engine in t["speed"]:
        ts, ss = t["speed"][engine], s["speed"][engine]
        rows += [
            [f"decode tok/s ({engine})", f"{ts['decode_tok_s']:.1f}", f"{ss['decode_tok_s']:.1f}"],
            [f"TTFT ms ({engine})", f"{ts['ttft_ms']:.0f}", f"{ss['ttft_ms']:.0f}"],
            [f"model memory MB ({engine})", f"{ts['model_rss_mb']:.0f}", f"{ss['model_rss_mb']:.0f}"],
        ]
    ht = report["quality"]["heldout_text"]
    rows.append(
        ["perplexity, held-out text", f"{ht['teacher_perplexity']:.2f}", f"{ht['student_perplexity']:.2f}"]
    )
    if "task" in t:
        rows.append(
            [
                "task score",
                f"{t['task']['correct']}/{t['task']['total']}",
                f"{s['task']['correct']}/{s['task']['total']}",
            ]
        )
    console.print(table("teacher against student", ["", "teacher", "student"], rows))
    console.print(f"[bold]{report['headline']}[/bold]")


@distill_app.command("report")
def report_cmd(
    teacher: str = typer.Option(..., "--teacher", help="The teacher model source."),
    student: Path = typer.Option(..., "--student", help="The student's Hugging Face folder.", exists=True),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.md, report.json and report.png."),
    data: Path = typer.Option(
        None, "--data", help="The teacher's JSONL, for the held-out prompts.", exists=True
    ),
    train_dir: Path = typer.Option(
        None, "--train-dir", help="The training output folder (held-out ids, loss curve).", exists=True
    ),
    heldout_text: Path = typer.Option(
        None, help="Plain text for perplexity (default manifests/eval/heldout.txt)."
    ),
    task: Path = typer.Option(None, help='JSONL of {"question", "answers"} for a task score.'),
    onnx_variant: str = typer.Option(
        "cpu-int4", help="Also convert both to this variant and measure them ('' = skip)."
    ),
    teacher_onnx: Path = typer.Option(None, help="An already converted teacher variant folder."),
    student_onnx: Path = typer.Option(None, help="An already converted student variant folder."),
    new_tokens: int = typer.Option(32, help="Fixed number of generated tokens per timed run."),
    repeats: int = typer.Option(2, help="Timed runs per prompt, after a warm-up."),
    threads: int = typer.Option(None, help="Threads for every model (torch and onnxruntime)."),
    recipe: Path = typer.Option(
        None, "--recipe", help="Take the settings from this recipe's distill.report instead.", exists=True
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Compare teacher and student: perplexity, top-1 agreement and KL, task score, decode tok/s, TTFT,
    memory (each model in its own process) and size, with the retention line
    ("inference time -X%, memory -Y%, Z% of accuracy kept"). Writes report.md, report.json, report.png."""
    import json

    from build_side.distill.config import ReportSettings
    from build_side.distill.records import read_records
    from build_side.distill.report import build_report
    from build_side.sources import prepare

    settings = ReportSettings(
        heldout_text=str(heldout_text) if heldout_text else None,
        task=str(task) if task else None,
        onnx_variant=onnx_variant or None,
        speed_new_tokens=new_tokens,
        speed_repeats=repeats,
        threads=threads,
    )
    base_dir = None
    if recipe:
        from build_side.distill.recipe import load_recipe

        _, section = load_recipe(recipe)
        settings = section.report or settings
        base_dir = Path(section.base_dir) if section.base_dir else None
    heldout = []
    if data and train_dir:
        val_ids = set(json.loads((train_dir / "distill_config.json").read_text()).get("val_ids", []))
        heldout = [r for r in read_records(data) if r.id in val_ids]
    with console.status(f"preparing {teacher} ..."):
        teacher_dir = prepare(teacher).path
    say = (lambda m: None) if json_out else console.print
    report = build_report(
        teacher_dir, student, out, settings, heldout, train_dir, teacher_onnx, student_onnx, base_dir, say
    )
    if json_out:
        print_json(report)
    else:
        _print_report(report)
        console.print(f"report -> {out}/report.md, report.json, report.png")


@distill_app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(
        ..., help="A recipe YAML with `source:` and a `distill:` section.", exists=True
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder (default: the recipe's work_dir + /distill)."
    ),
) -> None:
    """Run a recipe's whole distillation: generate, validate, train, report. Resumable: run it again
    after an interruption. The student (OUT/student) then goes through `slmops convert` and `bundle`,
    or run the full recipe with `slmops pipeline run`."""
    from build_side.distill.recipe import load_recipe, run_from_recipe
    from build_side.sources import prepare

    doc, section = load_recipe(recipe)
    out = out or Path(doc.get("work_dir", f"work/{recipe.stem}")) / "distill"
    source = doc.get("source") or section.teacher
    if not source:
        from edge_agent.errors import DistillError

        raise DistillError(f"{recipe}: name the teacher with `source:` or `distill.teacher`")
    with console.status(f"preparing {source} ..."):
        base = prepare(source).path
    student = run_from_recipe(section, base, out, recipe_dir=recipe.parent, say=console.print)
    report = out / "report" / "report.json"
    if report.exists():
        import json

        _print_report(json.loads(report.read_text()))
    console.print(f"student -> {student}")
