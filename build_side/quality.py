"""Measure converted variants against the cpu-fp32 reference and record the figures in their records.

The metrics and the logits runner are `edge_agent.evaluation` (shared with bench); this module picks
the reference, loads the variants the machine can run, and writes each one's `eval`. A variant whose
execution provider this machine lacks (a CUDA build on a CPU box) gets a note instead of figures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from build_side.convert import REFERENCE_ID, ConvertedVariant, load_variants
from edge_agent.errors import ConvertError, ModelRuntimeError
from edge_agent.evaluation import (
    decode_tokens_per_second,
    evaluate_quality,
    size_on_disk,
    text_label,
    to_variant_eval,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = REPO / "manifests" / "eval" / "heldout.txt"
SPEED_PROMPT = "Write three sentences about keeping weather stations running through the winter."
SPEED_TOKENS = 32


def available_providers() -> set[str]:
    import onnxruntime

    return set(onnxruntime.get_available_providers())


def measure(
    out_dir: Path,
    ids: list[str] | None = None,
    text_path: Path = DEFAULT_TEXT,
    window: int = 512,
    max_tokens: int | None = None,
    speed: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[ConvertedVariant]:
    """Fill `eval` of the variants in `out_dir` (all, or `ids`) and save their records.

    `progress(stage, done, total)` reports the quality windows, then each speed run."""
    from edge_agent.runtime import GenerationParams, LoadedModel

    out_dir = Path(out_dir)
    records = load_variants(out_dir, ids)
    if not (out_dir / REFERENCE_ID).is_dir():
        raise ConvertError(
            f"quality is measured against {REFERENCE_ID}, which {out_dir} lacks: convert it too "
            f"(`--variant {REFERENCE_ID}`; a bundle may still leave it out) or skip with --no-eval"
        )
    try:
        text = Path(text_path).read_text()
    except OSError as exc:
        raise ConvertError(f"evaluation text {text_path}: {exc}") from exc
    label = text_label(Path(text_path).name, text)
    have = available_providers()
    runnable = [r for r in records if r.execution_providers[0] in have]
    for r in records:
        if r.execution_providers[0] not in have:
            r.eval, r.eval_note = (
                None,
                f"not measured: needs {r.execution_providers[0]}, which this machine lacks",
            )

    try:
        reference = LoadedModel(out_dir / REFERENCE_ID)
        models = {r.id: LoadedModel(out_dir / r.id, r.execution_providers[0]) for r in runnable}
    except ModelRuntimeError as exc:
        raise ConvertError(f"cannot load a variant for evaluation: {exc}") from exc
    candidates = {vid: m for vid, m in models.items() if vid != REFERENCE_ID}
    window = min(window, reference.context_length - 1)  # a window plus one step must fit the context
    ref_report, reports = evaluate_quality(
        reference,
        candidates,
        text,
        window=window,
        max_tokens=max_tokens,
        progress=(lambda d, t: progress("quality", d, t)) if progress else None,
    )
    reports[REFERENCE_ID] = ref_report
    params = GenerationParams(max_new_tokens=SPEED_TOKENS)
    for n, r in enumerate(runnable, 1):
        tok_s = None
        if speed:
            prompt = models[r.id].chat_prompt([{"role": "user", "content": SPEED_PROMPT}])
            tok_s = decode_tokens_per_second(models[r.id], params, prompt)
            if progress:
                progress("speed", n, len(runnable))
        r.eval = to_variant_eval(reports[r.id], REFERENCE_ID, label, size_on_disk(out_dir / r.id), tok_s)
        r.eval_note = None
    for r in records:
        r.save(out_dir)
    return records


__all__ = ["DEFAULT_TEXT", "measure"]
