"""Fine-tune a causal LM with LoRA, QLoRA or all of its weights: one loop, read top to bottom.

    out/
      adapter/          lora, qlora: the PEFT adapter with the best validation loss
      model/            full: the whole model with the best validation loss
      merged/           lora, qlora with merge: the base with the adapter folded in
      checkpoints/      step-000040.pt ...: what --resume continues from
      finetune.json     the resolved config, the base, the scores before and after, the history

The schedule is nanoGPT's: linear warm-up, then a cosine down to `min_lr_ratio * lr`. Validation
runs every `eval_every` optimizer steps (once an epoch by default); the best weights are written at
once, and `patience` validations without improvement stop the run. The data order of micro-batch
`i` depends only on `(seed, i)`, so a resumed run sees exactly the batches the first run would have.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from build_side.finetune.config import FinetuneConfig
from build_side.finetune.data import Encoded, encode, load_examples
from build_side.finetune.evaluate import collate, evaluate, resolve_metric, token_losses, validation_loss
from edge_agent.errors import TrainingError

# What a resumed run may change: how long it goes on, and how it is scored (eval.*).
RESUMABLE_CHANGES = {"train.epochs", "train.max_steps", "train.patience"}


@dataclass
class TrainState:
    """Everything about progress that a checkpoint must carry besides the weights."""

    step: int = 0
    best_val_loss: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    since_eval: list[float] = field(default_factory=list)  # train losses since the last validation


@dataclass
class RunResult:
    name: str
    method: str
    output_dir: Path
    artifact: Path  # the PEFT adapter folder, or the full model folder
    merged: Path | None
    steps: int
    max_steps: int
    best_val_loss: float
    best_step: int
    stopped_early: bool
    interrupted: bool  # stopped by stop_after before max_steps: --resume continues
    resumed_from: int | None
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: the wall clock on an otherwise idle machine, per thread
    train_examples: int
    val_examples: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    history: list[dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("output_dir", "artifact", "merged"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data


# -- model --------------------------------------------------------------------------------------


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_qlora_supported() -> None:
    """QLoRA needs bitsandbytes' 4-bit kernels, which need a CUDA GPU: say so plainly, up front."""
    if not torch.cuda.is_available():
        raise TrainingError(
            "qlora keeps the base model in 4 bits through bitsandbytes, which needs a CUDA GPU; "
            f"this machine has none (torch {torch.__version__}). Use --method lora here: the same "
            "adapter, trained on a full-precision base."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError("qlora needs the bitsandbytes package: pip install bitsandbytes")


def load_base(config: FinetuneConfig, base_dir: Path, device: torch.device) -> Any:
    from transformers import AutoModelForCausalLM

    if config.method == "qlora":
        check_qlora_supported()
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        return AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=quant, device_map={"": 0})
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if config.quantize_base == "int4":  # the weights the cpu-int4 variant runs, see quantsim.py
        from build_side.finetune.quantsim import quantize_base

        quantize_base(model, config.quantize_block_size)
    return model.to(device)


def add_adapter(config: FinetuneConfig, model: Any) -> Any:
    """Wrap the base for lora/qlora; for full, every weight trains as it is."""
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        layers_to_transform=lora.layers,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:  # e.g. target modules that this architecture does not have
        raise TrainingError(f"cannot add LoRA to this model: {exc}") from exc


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_artifact(config: FinetuneConfig, model: Any, tokenizer: Any, out: Path) -> None:
    """The best weights so far: the adapter alone for lora/qlora, the whole model for full."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if config.method == "full":
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def load_best(config: FinetuneConfig, model: Any, artifact: Path) -> None:
    """Put the best saved weights back into the model, for the final scores and the merge."""
    if config.method == "full":
        model.load_state_dict(type(model).from_pretrained(artifact, dtype=torch.float32).state_dict())
    else:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(artifact / "adapter_model.safetensors"))


def merge_adapter(base_dir: Path, adapter: Path, tokenizer: Any, out: Path) -> Path:
    """Fold the adapter into a full-precision copy of the base, for `slmops convert`."""
    from build_side.adapters import merge_into

    merge_into(base_dir, {"adapter": adapter}, out)
    tokenizer.save_pretrained(out)
    return out


# -- data order and schedule --------------------------------------------------------------------


def get_batch(
    data: list[Encoded], index: int, batch_size: int, seed: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Micro-batch number `index`: epoch e is a permutation seeded by (seed, e); the last one wraps."""
    per_epoch = math.ceil(len(data) / batch_size)
    epoch, pos = divmod(index, per_epoch)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    rows = order[pos * batch_size : (pos + 1) * batch_size].tolist()
    return collate([data[i] for i in rows], pad_id)


def get_lr(step: int, max_steps: int, warmup: int, lr: float, min_lr: float) -> float:
    if step < warmup:  # linear warm-up from lr/warmup
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, max_steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (lr - min_lr)


# -- checkpoints --------------------------------------------------------------------------------


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted(checkpoint_dir(out_dir).glob("step-*.pt"))
    return found[-1] if found else None


def save_checkpoint(
    out_dir: Path, model: Any, optimizer: Any, state: TrainState, config: FinetuneConfig, keep: int
) -> Path:
    folder = checkpoint_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{state.step:06d}.pt"
    payload = {
        "weights": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "state": asdict(state),
        "config": config.model_dump(mode="json"),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.rename(path)  # a checkpoint is there whole or not at all
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path, model: Any, optimizer: Any, config: FinetuneConfig) -> TrainState:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise TrainingError(f"{path}: cannot read this checkpoint ({exc})") from exc
    changed = _differences(payload["config"], config.model_dump(mode="json"))
    blocking = [key for key in changed if not key.startswith("eval.") and key not in RESUMABLE_CHANGES]
    if blocking:
        raise TrainingError(
            f"{path} was written with other settings ({', '.join(blocking)}); "
            "resume with the same settings or start in a new output folder"
        )
    params = dict(model.named_parameters())
    for name, tensor in payload["weights"].items():
        if name not in params:
            raise TrainingError(f"{path}: the checkpoint has {name!r}, which this model has not")
        with torch.no_grad():
            params[name].copy_(tensor)
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"]["torch"])
    random.setstate(payload["rng"]["python"])
    return TrainState(**payload["state"])


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


# -- the run ------------------------------------------------------------------------------------


def prepare_data(config: FinetuneConfig, base_dir: Path) -> tuple[Any, list[Encoded], list[Encoded], str]:
    """(tokenizer, train, validation, metric): the split is seeded, so every call agrees."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_ex, val_ex = load_examples(config.data, config.train.seed)
    train_data = [encode(tokenizer, e, config.data.max_length) for e in train_ex]
    val_data = [encode(tokenizer, e, config.data.max_length) for e in val_ex]
    return tokenizer, train_data, val_data, resolve_metric(config.eval.metric, val_ex)


def score(config: FinetuneConfig, base_dir: Path, artifact: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(before, after) on the validation set, for a run that trained without scoring (a trial)."""
    tokenizer, _, val_data, metric = prepare_data(config, base_dir)
    model = load_base(config, base_dir, pick_device())
    e = config.eval
    before = evaluate(model, tokenizer, val_data, metric, e.max_new_tokens, e.max_examples, e.batch_size)
    model = add_adapter(config, model)
    load_best(config, model, artifact)
    after = evaluate(model, tokenizer, val_data, metric, e.max_new_tokens, e.max_examples, e.batch_size)
    return before, after


def finetune(
    config: FinetuneConfig,
    base_dir: Path,
    out_dir: Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    evaluate_after: bool = True,
    progress: bool = True,
) -> RunResult:
    """Train `config` on the base model in `base_dir`; write the results into `out_dir`.

    `stop_after=N` ends this session after N more steps with a checkpoint, as an interruption
    would (a long CPU run split over sessions); `resume=True` continues from the latest checkpoint.
    """
    started, cpu_started = time.monotonic(), time.process_time()
    t = config.train
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if resume and checkpoint is None:
        raise TrainingError(f"nothing to resume: {checkpoint_dir(out_dir)} has no checkpoint")
    random.seed(t.seed)
    torch.manual_seed(t.seed)
    if t.threads:
        torch.set_num_threads(t.threads)
    device = pick_device()

    # 1. data: records -> prompt/answer -> token ids with the prompt masked out of the loss
    tokenizer, train_data, val_data, metric = prepare_data(config, base_dir)
    pad_id = tokenizer.pad_token_id

    # 2. the base model, scored before any training, then wrapped with the adapter
    model = load_base(config, base_dir, device)
    ev = config.eval
    before = None
    if ev.before and checkpoint is None:
        _say(
            progress,
            f"{config.name}: scoring the base model on {len(val_data)} validation examples ({metric})",
        )
        before = evaluate(
            model, tokenizer, val_data, metric, ev.max_new_tokens, ev.max_examples, ev.batch_size
        )
    model = add_adapter(config, model)
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()

    # 3. optimizer and schedule; an optimizer step sees batch_size * grad_accum examples
    micro_per_epoch = math.ceil(len(train_data) / t.batch_size)
    steps_per_epoch = max(1, micro_per_epoch // t.grad_accum)
    max_steps = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
    eval_every = t.eval_every or steps_per_epoch
    warmup = round(t.warmup_ratio * max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.95))
    state = TrainState()
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, config)
    resumed_from = state.step if checkpoint is not None else None
    artifact = out_dir / ("model" if config.method == "full" else "adapter")

    # 4. the loop
    with _progress(progress, max_steps, state.step, config.name) as bar:
        last = max_steps if stop_after is None else min(max_steps, state.step + stop_after)
        for step in range(state.step, last):
            if state.stopped_early:
                break
            lr = get_lr(step, max_steps, warmup, t.lr, t.lr * t.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for micro in range(t.grad_accum):
                batch = get_batch(train_data, step * t.grad_accum + micro, t.batch_size, t.seed, pad_id)
                loss_sum, n = token_losses(model, batch)
                loss = loss_sum / max(n, 1) / t.grad_accum  # mean per token, averaged over micro-batches
                loss.backward()
                step_loss += loss.item()
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step = step + 1
            state.since_eval.append(step_loss)
            if state.step % eval_every and state.step != max_steps:
                bar.update(state.step, loss=step_loss, lr=lr)
            else:
                val_loss = validation_loss(model, val_data, pad_id, ev.batch_size)
                train_loss = sum(state.since_eval) / len(state.since_eval)
                state.since_eval.clear()
                state.history.append(
                    {
                        "step": state.step,
                        "lr": lr,
                        "train_loss": round(train_loss, 4),
                        "val_loss": round(val_loss, 4),
                    }
                )
                if val_loss < state.best_val_loss - t.min_delta:
                    state.best_val_loss, state.best_step, state.bad_evals = val_loss, state.step, 0
                    save_artifact(config, model, tokenizer, artifact)
                else:
                    state.bad_evals += 1
                    state.stopped_early = state.bad_evals >= t.patience and state.step < max_steps
                bar.update(state.step, loss=step_loss, lr=lr, val=val_loss)
                save_checkpoint(out_dir, model, optimizer, state, config, t.keep_checkpoints)

    interrupted = state.step < max_steps and not state.stopped_early
    if interrupted:
        save_checkpoint(out_dir, model, optimizer, state, config, t.keep_checkpoints)

    # 5. the best weights back in, the merge if asked for, the scores after, the record of it all
    if state.best_step:
        load_best(config, model, artifact)
    model.config.use_cache = True  # generation from here on
    after = None
    if evaluate_after and not interrupted:
        _say(
            progress,
            f"{config.name}: scoring the best weights (step {state.best_step}) on the validation set",
        )
        after = evaluate(
            model, tokenizer, val_data, metric, ev.max_new_tokens, ev.max_examples, ev.batch_size
        )
    merged = None
    if config.merge and not interrupted:
        merged = merge_adapter(base_dir, artifact, tokenizer, out_dir / "merged")
    result = RunResult(
        name=config.name,
        method=config.method,
        output_dir=out_dir,
        artifact=artifact,
        merged=merged,
        steps=state.step,
        max_steps=max_steps,
        best_val_loss=round(state.best_val_loss, 4),
        best_step=state.best_step,
        stopped_early=state.stopped_early,
        interrupted=interrupted,
        resumed_from=resumed_from,
        seconds=round(time.monotonic() - started, 1),
        cpu_seconds=round(time.process_time() - cpu_started, 1),
        train_examples=len(train_data),
        val_examples=len(val_data),
        before=before,
        after=after,
        history=state.history,
    )
    record = {"config": config.model_dump(mode="json"), "base": str(base_dir), "result": result.to_json()}
    (out_dir / "finetune.json").write_text(json.dumps(record, indent=2))
    return result


def _say(enabled: bool, message: str) -> None:
    if enabled:
        from rich.console import Console

        Console(stderr=True).print(message, highlight=False)


class _progress:
    """A rich progress bar on stderr with the loss, the learning rate and the last validation loss.

    When stderr is not a terminal (a log file), a plain line per validation and every tenth of the
    run instead, so a background run can be followed with `tail -f`.
    """

    def __init__(self, enabled: bool, total: int, done: int, name: str) -> None:
        self.enabled, self.total, self.done, self.name = enabled, total, done, name
        self.val: float | None = None
        self.started = time.monotonic()

    def __enter__(self) -> _progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.console = Console(stderr=True)
            self.live = self.console.is_terminal
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
                disable=not self.live,
            )
            self.bar.start()
            self.task = self.bar.add_task(
                f"finetune {self.name}", total=self.total, completed=self.done, info=""
            )
        return self

    def update(self, step: int, loss: float, lr: float, val: float | None = None) -> None:
        self.val = val if val is not None else self.val
        if not self.enabled:
            return
        info = f"loss {loss:.3f}  lr {lr:.1e}" + (f"  val {self.val:.3f}" if self.val is not None else "")
        self.bar.update(self.task, completed=step, info=info)
        if not self.live and (val is not None or step % max(1, self.total // 10) == 0):
            elapsed = time.monotonic() - self.started
            self.console.print(f"finetune {self.name}: step {step}/{self.total}  {info}  ({elapsed:.0f}s)")

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()
