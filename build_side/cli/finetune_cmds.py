"""`slmops finetune` (train LoRA / QLoRA / full, or search) and `slmops adapters` (ONNX export, try)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from build_side.cli.output import console, err_console, print_json, table

SOURCE_HELP = (
    "Base model: a Hugging Face folder, a GGUF file, a hub id or a named source (default: the recipe's)."
)

adapters_app = typer.Typer(
    help="LoRA adapters for ONNX Runtime: export several onto one base, try them with onnxruntime-genai.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
    app.add_typer(adapters_app, name="adapters")


def _flag_overrides(**flags: Any) -> dict[str, Any]:
    """Flags the user gave -> a nested settings dict (dotted names become levels)."""
    out: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        node = out
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def finetune(
    source: str | None = typer.Argument(None, help=SOURCE_HELP),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="A recipe YAML; its `finetune` section is used."
    ),
    adapter: list[str] | None = typer.Option(
        None, "--adapter", help="Train only this adapter of the recipe (repeat)."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Training data: JSON/JSONL {input, output} or {messages}."
    ),
    val_data: Path | None = typer.Option(
        None, "--val-data", help="Validation data (default: split off --data)."
    ),
    val_fraction: float | None = typer.Option(None, help="Share held out for validation (default 0.15)."),
    label_field: str | None = typer.Option(
        None, help="Field with a label: stratified split, accuracy (default 'label')."
    ),
    system: str | None = typer.Option(None, help="System prompt of every example."),
    prompt: str | None = typer.Option(None, "--prompt-template", help="User turn with {field} placeholders."),
    response: str | None = typer.Option(
        None, "--response-template", help="Answer with {field} placeholders."
    ),
    chat: bool | None = typer.Option(None, "--chat/--no-chat", help="Use the model's chat template."),
    max_length: int | None = typer.Option(None, help="Most tokens per example."),
    name: str | None = typer.Option(None, help="Adapter name (lowercase, digits, dashes)."),
    method: str | None = typer.Option(None, help="lora, qlora (4-bit base, CUDA + bitsandbytes) or full."),
    r: int | None = typer.Option(None, "--r", help="LoRA rank."),
    alpha: float | None = typer.Option(None, help="LoRA alpha (the update is scaled by alpha/r)."),
    dropout: float | None = typer.Option(None, help="LoRA dropout."),
    target_modules: str | None = typer.Option(None, help="Comma-separated module names, e.g. q_proj,v_proj."),
    layers: str | None = typer.Option(None, help="Only these layers get LoRA, e.g. 15-29."),
    epochs: float | None = typer.Option(None),
    max_steps: int | None = typer.Option(None, help="Optimizer steps (overrides --epochs)."),
    batch_size: int | None = typer.Option(None),
    grad_accum: int | None = typer.Option(None, help="Micro-batches per optimizer step."),
    lr: float | None = typer.Option(None, help="Peak learning rate (cosine schedule with warm-up)."),
    warmup_ratio: float | None = typer.Option(None),
    gradient_checkpointing: bool | None = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing"
    ),
    eval_every: int | None = typer.Option(None, help="Steps between validations (default: once an epoch)."),
    patience: int | None = typer.Option(None, help="Validations without improvement before stopping."),
    seed: int | None = typer.Option(None),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    metric: str | None = typer.Option(None, help="auto, accuracy, exact_match or perplexity."),
    max_new_tokens: int | None = typer.Option(None, help="Answer length when scoring."),
    merge: bool | None = typer.Option(None, "--merge/--no-merge", help="Also write the merged full model."),
    quantize_base: str | None = typer.Option(
        None, help="int4: train LoRA against the weights the cpu-int4 variant runs (none: fp32)."
    ),
    out: Path = typer.Option(
        Path("work/finetune"), "--out", "-o", help="Output folder (one sub-folder per adapter)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the latest checkpoint in the output folder."
    ),
    stop_after: int | None = typer.Option(
        None,
        "--stop-after",
        help="End this session after N steps with a checkpoint (continue with --resume).",
    ),
    search_trials: int | None = typer.Option(
        None, "--search", help="Random search: N trials over learning rate, LoRA rank and batch size."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Fine-tune a model with LoRA, QLoRA or all of its weights, scored before and after.

    Either a recipe (`--recipe`, several adapters on one base) or a data file (`--data`); flags
    override the recipe's settings for every adapter. Each adapter's folder gets the best weights
    (adapter/ or model/), checkpoints/ for --resume, and finetune.json with the resolved config,
    the scores before and after, and the loss history. Data: JSON or JSONL records, either
    {input, output} (any fields, through --prompt-template / --response-template) or chat
    {messages}; records with a `label` are split stratified and scored by accuracy.
    """
    import yaml

    from build_side.finetune.recipe import configs_from_section
    from build_side.sources import prepare
    from edge_agent.errors import ContractError

    section: dict[str, Any] = {}
    recipe_dir = None
    if recipe is not None:
        try:
            doc = yaml.safe_load(recipe.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ContractError(recipe, f"cannot read the recipe ({exc})") from exc
        if not isinstance(doc, dict) or "finetune" not in doc:
            raise ContractError(recipe, "has no `finetune` section")
        section, recipe_dir = doc["finetune"], recipe.parent
        source = source or doc.get("source")
    if source is None:
        raise ContractError("slmops finetune", "name a base model (SOURCE) or a recipe with a `source`")
    if recipe is None and data is None:
        raise ContractError("slmops finetune", "give --data FILE or --recipe FILE")
    overrides = _flag_overrides(
        name=name,
        method=method,
        merge=merge,
        quantize_base=quantize_base,
        data__train=str(data) if data else None,
        data__validation=str(val_data) if val_data else None,
        data__val_fraction=val_fraction,
        data__label_field=label_field,
        data__max_length=max_length,
        data__template__system=system,
        data__template__prompt=prompt,
        data__template__response=response,
        data__template__chat=chat,
        lora__r=r,
        lora__alpha=alpha,
        lora__dropout=dropout,
        lora__target_modules=target_modules.split(",") if target_modules else None,
        lora__layers=layers,
        train__epochs=epochs,
        train__max_steps=max_steps,
        train__batch_size=batch_size,
        train__grad_accum=grad_accum,
        train__lr=lr,
        train__warmup_ratio=warmup_ratio,
        train__gradient_checkpointing=gradient_checkpointing,
        train__eval_every=eval_every,
        train__patience=patience,
        train__seed=seed,
        train__threads=threads,
        eval__metric=metric,
        eval__max_new_tokens=max_new_tokens,
    )
    configs = configs_from_section(section, recipe_dir, overrides=overrides)
    if adapter:
        unknown = set(adapter) - {c.name for c in configs}
        if unknown:
            raise ContractError(recipe or "slmops finetune", f"no adapter named {sorted(unknown)}")
        configs = [c for c in configs if c.name in adapter]

    with err_console.status(f"preparing {source} ..."):
        base = prepare(source).path
    if search_trials:
        _run_search(configs, base, out, search_trials, quiet, json_out)
        return

    from build_side.finetune.trainer import finetune as run

    results = [
        run(c, base, out / c.name, resume=resume, stop_after=stop_after, progress=not quiet) for c in configs
    ]
    if json_out:
        print_json([r.to_json() for r in results])
        return
    for res in results:
        if res.interrupted:
            console.print(f"{res.name}: stopped at step {res.steps}/{res.max_steps}; continue with --resume")
            continue
        console.print(_scores_table(res.name, res.before, res.after))
        console.print(
            f"{res.name}: {res.steps}/{res.max_steps} steps, best validation loss {res.best_val_loss} "
            f"at step {res.best_step}{' (stopped early)' if res.stopped_early else ''}, "
            f"{res.seconds:.0f}s ({res.cpu_seconds:.0f} CPU s) -> {res.artifact}"
        )


def _scores_table(name: str, before: dict[str, Any] | None, after: dict[str, Any] | None):
    keys = [k for k in ("accuracy", "exact_match", "loss", "perplexity") if k in (after or before or {})]
    rows = [[k, (before or {}).get(k, ""), (after or {}).get(k, "")] for k in keys]
    n = (after or before or {}).get("examples", "?")
    return table(f"{name}: validation ({n} examples)", ["metric", "before", "after"], rows)


def _run_search(configs: list[Any], base: Path, out: Path, trials: int, quiet: bool, json_out: bool) -> None:
    from build_side.finetune.search import search
    from edge_agent.errors import ContractError

    if len(configs) != 1:
        raise ContractError(
            "--search",
            f"searches one adapter at a time; pick one with --adapter ({[c.name for c in configs]})",
        )
    config = configs[0]
    done, best = search(config, base, out / config.name, trials, progress=not quiet)
    rows = [t.row() for t in done]
    if json_out:
        print_json(
            {"trials": rows, "best": {**best.row(), "before": best.result.before, "after": best.result.after}}
        )
        return
    columns = list(rows[0])
    body = [
        [("* " if r["trial"] == best.number else "") + str(r["trial"]), *list(r.values())[1:]] for r in rows
    ]
    console.print(table(f"{config.name}: random search, {trials} trials (* best)", columns, body))
    console.print(_scores_table(config.name, best.result.before, best.result.after))
    console.print(f"best: trial {best.number} -> {out / config.name / best.result.artifact.name}")


@adapters_app.command("export")
def export(
    source: str = typer.Argument(..., help="The base model the adapters were trained on. " + SOURCE_HELP),
    adapters: list[str] = typer.Argument(
        ..., help="NAME=PEFT_DIR for each adapter (a finetune run's adapter/)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder, laid out like `slmops convert`'s."),
    variant: str = typer.Option(
        "cpu-int4", "--variant", "-v", help="The base variant: a convert target (cpu-int4, cpu-fp32 ...)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export LoRA adapters as .onnx_adapter files over one ONNX base variant with LoRA inputs.

    The base answers as the plain model while no adapter is active; onnxruntime-genai activates an
    adapter per generator (og.Adapters + Generator.set_active_adapter). Make a signed release with:
    slmops bundle OUT --name N --version V --adapter NAME=OUT/adapters/NAME.onnx_adapter ...
    """
    from build_side.finetune.export_adapters import export_adapters
    from build_side.sources import prepare
    from edge_agent.contracts import SourceInfo
    from edge_agent.errors import ContractError

    folders: dict[str, Path] = {}
    infos = {}
    for item in adapters:
        adapter_name, sep, folder = item.partition("=")
        if not sep:
            raise ContractError(item, "expected NAME=PEFT_DIR")
        folders[adapter_name] = Path(folder)
        infos[adapter_name] = _run_card(adapter_name, Path(folder))
    with err_console.status(f"preparing {source} ..."):
        prepared = prepare(source)
    with err_console.status(f"building the {variant} base with LoRA inputs and writing the adapters ..."):
        result = export_adapters(
            prepared.path,
            folders,
            out,
            variant,
            source=SourceInfo(**prepared.info()),
            infos=infos,
        )
    if json_out:
        adapter_paths = {k: str(v) for k, v in result.adapters.items()}
        print_json({"variant_dir": str(result.base_dir), "adapter_files": adapter_paths, **result.info})
        return
    rows = [
        [n, i["rank"], i["modules"], i["file"], i.get("trained_for", "")]
        for n, i in result.info["adapters"].items()
    ]
    title = f"{out}/{result.info['base']}: base with {result.info['lora_inputs']} LoRA inputs"
    console.print(table(title, ["adapter", "rank", "modules", "file", "trained for"], rows))


def _run_card(name: str, peft_dir: Path):  # type: ignore[no-untyped-def]
    """The adapter's card from the run that trained it, when it was ours; a bare card otherwise."""
    from build_side.finetune.release import adapter_info, run_config
    from edge_agent.contracts import AdapterInfo

    if not (peft_dir.parent / "finetune.json").is_file():
        return AdapterInfo(name=name)
    return adapter_info(name, run_config(peft_dir.parent))


def _adapters_in(folder: Path) -> tuple[Path, dict[str, Path], dict[str, str]]:
    """(variant folder, {name: adapter file}, {name: system prompt}) of an export or a bundle folder."""
    from edge_agent.errors import ContractError

    if (folder / "export.json").is_file():
        info = json.loads((folder / "export.json").read_text())
        files = {n: folder / a["file"] for n, a in info["adapters"].items()}
        return (
            folder / info["base"],
            files,
            {n: a["system"] for n, a in info["adapters"].items() if a.get("system")},
        )
    if (folder / "manifest.json").is_file():
        from edge_agent.contracts import BundleManifest

        manifest = BundleManifest.model_validate_json((folder / "manifest.json").read_text())
        if not manifest.adapters:
            raise ContractError(folder, "this bundle lists no adapters")
        variant = manifest.adapters[0].variants[0]
        files = {a.name: folder / b.file for a in manifest.adapters if (b := a.base_for(variant))}
        systems = {a.name: a.prompt.system for a in manifest.adapters if a.prompt.system}
        return folder / variant, files, systems
    raise ContractError(folder, "neither an `slmops adapters export` folder nor a bundle")


@adapters_app.command("try")
def try_adapters(
    folder: Path = typer.Argument(..., help="An `slmops adapters export` folder or a bundle with adapters."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message."),
    system: list[str] | None = typer.Option(
        None, "--system", help="NAME=TEXT: the system prompt for one adapter (default: its training run's)."
    ),
    max_new_tokens: int = typer.Option(48),
    json_out: bool = typer.Option(False, "--json", help="Print the answers as JSON."),
) -> None:
    """Answer PROMPT with the base and with each adapter, all on one model in onnxruntime-genai.

    Each adapter answers with its own system prompt; the base is asked with each of those prompts
    too, so every adapter's answer sits beside the base's answer to the very same input.
    """
    from build_side.finetune.export_adapters import AdapterSession
    from edge_agent.errors import ContractError

    variant_dir, files, own = _adapters_in(folder)
    for item in system or []:
        adapter_name, sep, text = item.partition("=")
        if not sep or adapter_name not in files:
            raise ContractError(item, f"expected NAME=TEXT with NAME one of {sorted(files)}")
        own[adapter_name] = text
    with err_console.status("loading the base and its adapters in onnxruntime-genai ..."):
        session = AdapterSession(variant_dir, files)
    rows = []
    for adapter_name in files:
        sys_prompt = own.get(adapter_name)
        for label, use in ((f"base ({adapter_name}'s prompt)", None), (adapter_name, adapter_name)):
            answer = session.answer(prompt, use, sys_prompt, max_new_tokens)
            rows.append({"adapter": use, "label": label, "system": sys_prompt, "answer": answer})
    if json_out:
        print_json(rows)
    else:
        console.print(table(prompt, ["model", "answer"], [[r["label"], r["answer"]] for r in rows]))


@adapters_app.command("score")
def score_cmd(
    folder: Path = typer.Argument(..., help="An `slmops adapters export` folder or a bundle with adapters."),
    runs: list[str] = typer.Argument(
        ..., help="NAME=RUN_DIR: the `slmops finetune` folder that trained NAME."
    ),
    limit: int | None = typer.Option(None, help="Score at most this many validation examples each."),
    json_out: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
) -> None:
    """Score each adapter on its own validation set in onnxruntime-genai, beside the bare base.

    The validation split, template and metric come from the training run's finetune.json, so the
    figures compare with the PyTorch ones `slmops finetune` printed.
    """
    from build_side.finetune.export_adapters import AdapterSession, score_adapters
    from edge_agent.errors import ContractError

    variant_dir, files, _ = _adapters_in(folder)
    pairs = {}
    for item in runs:
        adapter_name, sep, run_dir = item.partition("=")
        if not sep:
            raise ContractError(item, "expected NAME=RUN_DIR")
        pairs[adapter_name] = Path(run_dir)
    with err_console.status("loading the base and its adapters in onnxruntime-genai ..."):
        session = AdapterSession(variant_dir, files)
    with err_console.status(f"scoring {', '.join(pairs)} ..."):
        rows = score_adapters(session, pairs, limit)
    if json_out:
        print_json(rows)
        return
    body = [[r["adapter"], r["metric"], r["examples"], r["base"], r["with_adapter"]] for r in rows]
    console.print(
        table(
            f"{variant_dir} in onnxruntime-genai",
            ["adapter", "metric", "examples", "base", "with adapter"],
            body,
        )
    )
