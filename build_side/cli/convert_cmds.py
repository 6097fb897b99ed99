"""`slmops convert`: ONNX variants of a model, quantized, each measured against the fp32 reference."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from build_side.cli.output import console, err_console, print_json

SOURCE_HELP = "A Hugging Face folder, a GGUF file, a hub id, or a named source such as smollm2-135m-instruct."


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)


@contextmanager
def progress_bars(to_stderr: bool = False) -> Iterator[Progress]:
    """Bars on stdout, or on stderr when stdout carries JSON for a script."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console if to_stderr else console) as bars:
        yield bars


def build_progress(bars: Progress) -> Callable:
    """One bar per variant, fed by the builder's progress events."""
    tasks: dict[str, int] = {}

    def on_event(ev) -> None:
        if ev.variant not in tasks:
            tasks[ev.variant] = bars.add_task(ev.variant, total=ev.total, step="")
        bars.update(tasks[ev.variant], completed=ev.completed, step=ev.step)

    return on_event


def quality_progress(bars: Progress) -> Callable[[str, int, int], None]:
    tasks: dict[str, int] = {}

    def on_step(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            label = "quality" if stage == "quality" else "decode speed"
            tasks[stage] = bars.add_task(label, total=total, step="")
        bars.update(tasks[stage], completed=done, step=f"{done}/{total}")

    return on_step


def _fmt(value: float | None, pattern: str) -> str:
    return "" if value is None else pattern.format(value)


def describe_quantization(record) -> str:
    q = record.quantization
    if q is None:
        return record.precision
    parts = [record.precision, q.algorithm or "", f"b{q.block_size}" if q.block_size else ""]
    parts.append(f"acc{q.accuracy_level}" if q.accuracy_level is not None else "")
    parts.append("asym" if q.symmetric is False else "")
    if q.lm_head_precision and q.lm_head_precision != record.precision:
        parts.append(f"head:{q.lm_head_precision}")
    return " ".join(p for p in parts if p)


def quality_table(records: list, title: str = "variants") -> Table:
    """Size and quality of each variant against the cpu-fp32 reference, one row per variant."""
    ref = next((r for r in records if r.id == "cpu-fp32" and r.eval), None)
    t = Table(title=title, box=box.SIMPLE_HEAD)
    for name in ("variant", "weights", "MB", "of fp32", "ppl", "ppl ratio", "KL", "top-1", "tok/s"):
        t.add_column(
            name, no_wrap=name != "weights", justify="left" if name in ("variant", "weights") else "right"
        )
    for r in records:
        e = r.eval
        if e is None:
            t.add_row(r.id, describe_quantization(r), "", "", "", "", "", "", r.eval_note or "not measured")
            continue
        t.add_row(
            r.id,
            describe_quantization(r),
            f"{e.size_bytes / 1e6:.1f}",
            "" if ref is None else f"{e.size_bytes / ref.eval.size_bytes:.0%}",
            _fmt(e.perplexity, "{:.2f}"),
            _fmt(e.perplexity_ratio, "{:.4f}"),
            _fmt(e.kl_divergence, "{:.5f}"),
            _fmt(e.top1_agreement, "{:.1%}"),
            _fmt(e.decode_tok_s, "{:.0f}"),
        )
    return t


def print_wide(renderable: object) -> None:
    """Tables of many columns stay whole in narrow or non-terminal output (logs, CI)."""
    Console(width=max(console.width, 120)).print(renderable)


def convert(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    variant: list[str] = typer.Option(
        ...,
        "--variant",
        "-v",
        help="Variant to build (repeatable): a target such as cpu-fp32, cpu-int8, cpu-int4, cuda-fp16, "
        "cuda-int4, dml-int4, or ID=TARGET for a second variant of one target with other settings. A "
        "cpu-int4 with no settings from a Q4_1 GGUF source (smollm2-135m-instruct is one) carries the "
        "GGUF's blocks (--gguf-blocks fused); any setting given keeps the builder's defaults instead.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one sub-folder per variant."),
    block_size: int = typer.Option(
        None, help="int4/int8: weights per quantization block (16-256, default 32)."
    ),
    accuracy_level: int = typer.Option(
        None, help="int4/int8: MatMul activation precision, 1 fp32, 2 fp16, 3 bf16, 4 int8 (CPU default 4)."
    ),
    symmetric: bool = typer.Option(None, "--symmetric/--asymmetric", help="int4/int8: zero point or not."),
    algorithm: str = typer.Option(None, help="int4/int8: rounding method, rtn or k_quant (default rtn)."),
    int8_lm_head: bool = typer.Option(
        False, "--int8-lm-head", help="int4: keep the LM head (and a tied embedding) in int8."
    ),
    gguf_blocks: str = typer.Option(
        None,
        help="int4 from a Q4_1 GGUF source: carry its blocks over instead of quantizing again: fused "
        "(near exact, fast), offset (exact), float (exact, slow on CPU) or uint8 (rounded). Needs "
        "--int8-lm-head, block size 32.",
    ),
    adapter: list[str] = typer.Option(
        None, "--adapter", help="NAME=PEFT_DIR: a LoRA adapter merged into the weights (repeatable)."
    ),
    evaluate: bool = typer.Option(
        True, "--eval/--no-eval", help="Measure quality and speed against cpu-fp32 (needs that variant)."
    ),
    eval_text: Path = typer.Option(None, help="Held-out text (default: manifests/eval/heldout.txt)."),
    eval_window: int = typer.Option(512, help="Tokens per evaluation window."),
    eval_tokens: int = typer.Option(None, help="Score only the first N tokens of the text."),
    json_out: bool = typer.Option(False, "--json", help="Print the variant records as JSON."),
) -> None:
    """Convert SOURCE into ONNX variants with the onnxruntime-genai model builder, quantize them, and
    measure each against the cpu-fp32 reference: perplexity, KL divergence, top-1 agreement, size,
    decode speed. The builder's own output goes to OUT/convert.log; OUT/<id>.variant.json records how
    each variant was made and how it measured (`slmops bundle OUT` reads them)."""
    from build_side.adapters import merge_adapters, parse_adapter
    from build_side.convert import convert as do_convert
    from build_side.convert import parse_variant, with_source_defaults
    from build_side.quality import DEFAULT_TEXT, measure
    from build_side.sources import prepare
    from edge_agent.contracts import SourceInfo

    quant = {
        k: v
        for k, v in dict(
            block_size=block_size, accuracy_level=accuracy_level, symmetric=symmetric, algorithm=algorithm
        ).items()
        if v is not None
    }
    if int8_lm_head:
        quant["int8_lm_head"] = True
    if gguf_blocks:
        quant["gguf_blocks"] = gguf_blocks
    specs = []
    for text in variant:
        base = parse_variant(text)
        applies = base.resolved.precision in ("int4", "int8")
        own = {k: v for k, v in quant.items() if k != "gguf_blocks" or base.resolved.precision == "int4"}
        specs.append(parse_variant(text, **own) if applies else base)
    with console.status(f"preparing {source} ..."):
        src = prepare(source)
        info = SourceInfo(kind=src.kind, ref=src.ref, sha256=src.sha256)
        model_dir = src.path
        if adapter:
            adapters = dict(parse_adapter(a) for a in adapter)
            model_dir, merged_sha = merge_adapters(src.path, src.sha256, adapters)
            info = SourceInfo(
                kind=src.kind, ref=f"{src.ref} + adapters {', '.join(sorted(adapters))}", sha256=merged_sha
            )
    resolved = [with_source_defaults(s, info) for s in specs]  # convert() finds nothing left to add
    carried = [s.id for s, r in zip(specs, resolved, strict=True) if r != s]
    specs = resolved
    if carried:
        err_console.print(
            f"{', '.join(carried)}: the source is a Q4_1 GGUF, so its 4-bit blocks are carried over "
            "(--gguf-blocks fused) rather than quantized again; give any quantization option to use the "
            "builder's defaults instead"
        )
    with progress_bars(to_stderr=json_out) as bars:
        records = do_convert(model_dir, specs, out, info, progress=build_progress(bars))
        if evaluate:
            records = measure(
                out,
                [s.id for s in specs],
                text_path=eval_text or DEFAULT_TEXT,
                window=eval_window,
                max_tokens=eval_tokens,
                progress=quality_progress(bars),
            )
    if json_out:
        print_json([r.model_dump(mode="json", exclude_none=True) for r in records])
        return
    print_wide(quality_table(records, f"{source} -> {out}"))
