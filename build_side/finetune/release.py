"""An adapter as a release part: its card (what it is for, how it is asked) and its measured scores.

The card comes from the run that trained it (`finetune.json`): the system prompt of its template,
its answer format and labels, its generation defaults, and one of its validation requests as the
health gate's probe. The scores are measured on each exported variant in onnxruntime-genai, as the
device runs it: on the run's own validation split, and on a held-out set written apart from the
training data when the run names one (`release.heldout`).
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

from build_side.finetune.config import FinetuneConfig
from build_side.finetune.data import Example, load_examples
from edge_agent.contracts import AdapterGeneration, AdapterInfo, AdapterPrompt, AdapterScore
from edge_agent.errors import TrainingError


def run_config(run_dir: Path) -> FinetuneConfig:
    """The resolved config of an `slmops finetune` run folder (or of its adapter/ folder)."""
    run_dir = Path(run_dir)
    record = run_dir / "finetune.json"
    if not record.is_file() and (run_dir.parent / "finetune.json").is_file():
        record = run_dir.parent / "finetune.json"
    try:
        return FinetuneConfig.model_validate(json.loads(record.read_text())["config"])
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"{run_dir}: not a finetune run folder ({exc})") from exc


def _user_text(example: Example) -> str:
    if isinstance(example.prompt, str):
        return example.prompt
    return next(t["content"] for t in reversed(example.prompt) if t["role"] == "user")


def adapter_info(name: str, config: FinetuneConfig) -> AdapterInfo:
    """The card of the adapter `config` trained, without scores."""
    _, val = load_examples(config.data, config.train.seed)
    release = config.release
    labels = sorted({e.response.strip() for e in val}) if release.answer_format == "label" else []
    return AdapterInfo(
        name=name,
        trained_for=config.trained_for,
        prompt=AdapterPrompt(
            system=config.data.template.system,
            answer_format=release.answer_format,
            labels=labels,
            probe=_user_text(val[0]) if val else None,
        ),
        generation=AdapterGeneration(
            max_tokens=release.max_tokens or config.eval.max_new_tokens, temperature=release.temperature
        ),
    )


def _data_tag(path: Path) -> str:
    return f"{Path(path).name}@{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]}"


def _ask_request(session: object, name: str, system: str | None, max_tokens: int, request: object) -> str:
    return session.answer(request.input, name, system=system, max_new_tokens=max_tokens)  # type: ignore[attr-defined]


def score_variant(
    session: object, variant_id: str, runs: dict[str, Path], limit: int | None = None
) -> dict[str, list[AdapterScore]]:
    """Each adapter's scores on one exported variant (an `AdapterSession` over it): its validation
    split and, when its run names one, its held-out set."""
    from build_side.finetune.evaluate import is_hit, resolve_metric
    from build_side.tasks import ops

    out: dict[str, list[AdapterScore]] = {}
    for name, run_dir in runs.items():
        config = run_config(run_dir)
        info = adapter_info(name, config)
        max_tokens = info.generation.max_tokens or config.eval.max_new_tokens
        _, val = load_examples(config.data, config.train.seed)
        val = val[:limit] if limit else val
        metric = resolve_metric(config.eval.metric, val)
        scores = []
        if metric != "perplexity" and val and not isinstance(val[0].prompt, str):
            answers = [session.answer(e.prompt, name, max_new_tokens=max_tokens) for e in val]  # type: ignore[attr-defined]
            hits = sum(is_hit(metric, a, e) for a, e in zip(answers, val, strict=True))
            scores.append(
                AdapterScore(
                    variant=variant_id,
                    split="validation",
                    metric=metric,
                    value=round(hits / len(val), 4),
                    examples=len(val),
                    data=_data_tag(config.data.train),
                )
            )
        heldout = config.release.heldout
        if heldout is not None:
            requests = ops.load_requests(heldout.path)
            requests = requests[:limit] if limit else requests

            got = ops.score_skill(
                heldout.skill,
                requests,
                partial(_ask_request, session, name, info.prompt.system, max_tokens),
            )
            scores.append(
                AdapterScore(
                    variant=variant_id,
                    split="heldout",
                    metric="accuracy" if heldout.skill == "intent" else "exact_match",
                    value=got.score,
                    examples=got.examples,
                    data=_data_tag(heldout.path),
                )
            )
        out[name] = scores
    return out


# -- export beside every variant, then score --------------------------------------------------------


def export_variants(
    base_hf_dir: Path,
    peft: dict[str, Path],
    specs: list,  # list[VariantSpec]
    convert_dir: Path,
    source: object,  # SourceInfo
) -> list:
    """Build every variant as a base with LoRA inputs and export the adapters beside each one; the
    folder is laid out as `slmops convert` lays out its output, plus `adapters/<variant>/`:

        convert_dir/<id>/ + <id>.variant.json    the LoRA-input base, as a convert output
        convert_dir/adapters/<id>/<name>.onnx_adapter + <name>.adapter.json
    """
    import os
    import shutil

    from build_side.convert import load_variants
    from build_side.finetune.export_adapters import export_adapters

    convert_dir = Path(convert_dir)
    if convert_dir.exists():
        shutil.rmtree(convert_dir)
    (convert_dir / "adapters").mkdir(parents=True)
    infos = {name: adapter_info(name, run_config(folder)) for name, folder in peft.items()}
    for spec in specs:
        tmp = convert_dir / f".export-{spec.id}"
        export_adapters(base_hf_dir, peft, tmp, spec, source=source, infos=infos)  # type: ignore[arg-type]
        os.replace(tmp / spec.id, convert_dir / spec.id)
        os.replace(tmp / f"{spec.id}.variant.json", convert_dir / f"{spec.id}.variant.json")
        os.replace(tmp / "export.json", tmp / "adapters" / "export.json")
        os.replace(tmp / "adapters", convert_dir / "adapters" / spec.id)
        shutil.rmtree(tmp)
    return load_variants(convert_dir, [s.id for s in specs])


def exported_files(convert_dir: Path, variant_id: str) -> dict[str, Path]:
    """{adapter name: .onnx_adapter} exported beside one variant by `export_variants`."""
    folder = Path(convert_dir) / "adapters" / variant_id
    return {p.name.removesuffix(".onnx_adapter"): p for p in sorted(folder.glob("*.onnx_adapter"))}


def score_exported(
    convert_dir: Path, variant_ids: list[str], peft: dict[str, Path], limit: int | None = None
) -> dict[str, dict[str, list[AdapterScore]]]:
    """Score every adapter on every exported variant in onnxruntime-genai and write the scores into
    the adapters' cards; {variant: {adapter: scores}}."""
    from build_side.finetune.export_adapters import AdapterSession, read_card, write_card

    runs = {
        name: folder.parent if (folder.parent / "finetune.json").is_file() else folder
        for name, folder in peft.items()
    }
    out = {}
    for variant_id in variant_ids:
        files = exported_files(convert_dir, variant_id)
        session = AdapterSession(Path(convert_dir) / variant_id, files)
        scores = score_variant(session, variant_id, runs, limit)
        for name, path in files.items():
            card = read_card(path)
            write_card(card.model_copy(update={"scores": scores.get(name, [])}), path)
        out[variant_id] = scores
        del session
    return out


__all__ = [
    "adapter_info",
    "export_variants",
    "exported_files",
    "run_config",
    "score_exported",
    "score_variant",
]
