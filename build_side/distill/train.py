"""Stage 2: the student learns from the teacher. Read top to bottom, like nanoGPT's train.py.

Per optimizer step: `grad_accum` micro-batches; for each, the frozen teacher's logits and the
student's logits on the same tokens go into `distill_loss` (KL at temperature T, plus CE on the
teacher's answer). LR: linear warm-up, then cosine down to min_lr. Every `eval_interval` steps a
validation loss on held-out prompts; every `checkpoint_interval` steps a checkpoint that a later
call resumes from. `accelerate` places the student and splits batches across processes, so the
same call runs on one CPU or, under `accelerate launch`, on several GPUs.

Output folder:
    checkpoint/         student + optimizer + step (replaced atomically), removed when done
    metrics.jsonl       {"step", "lr", "loss", "kl", "ce"} and {"step", "val_loss", ...}
    distill_config.json the resolved configuration and what came out of it
    student/            the final student, a Hugging Face folder (what `convert` takes)
"""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from build_side.distill.config import StudentSpec, TrainSettings
from build_side.distill.data import collate, encode_record, get_batch, split_records, val_batches
from build_side.distill.loss import IGNORE, DistillLoss, distill_loss, topk_distill_loss
from build_side.distill.progress import Advance
from build_side.distill.records import TeacherRecord
from build_side.distill.student import load_student
from edge_agent.errors import DistillError

# Settings that may change between an interrupted run and its resumption without changing the result.
RESUMABLE_CHANGES = {"eval_interval", "checkpoint_interval", "threads"}


@dataclass(frozen=True)
class TrainResult:
    student_dir: Path
    steps: int
    val_loss: float | None
    finished: bool  # False when stop_after ended the call early (resume by calling again)


def get_lr(step: int, cfg: TrainSettings) -> float:
    """Linear warm-up over warmup_steps, then cosine from learning_rate down to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _keep_metrics_up_to(path: Path, step: int) -> None:
    """On resume, forget what was logged after the checkpoint: those steps run again."""
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))


def train(
    records: list[TeacherRecord],
    teacher_dir: Path,
    student_spec: StudentSpec,
    cfg: TrainSettings,
    out_dir: Path,
    context: dict[str, Any] | None = None,
    advance: Advance | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Distil `teacher_dir` into a student on `records`; resumes from out_dir/checkpoint if present.

    `context` (teacher id, generation settings, validation counts) is saved with the config.
    `stop_after` leaves after that many steps in this call (a time slice on a shared machine).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    # On a machine with no GPU, cpu=True is what lets `torchrun`/`mpirun` processes join one gloo group.
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu or not _has_accelerator())
    main = accelerator.is_main_process
    set_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)

    # ---- data: held-out prompts never reach the student's gradients
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    train_records, val_records = split_records(records, cfg.val_fraction)
    if not train_records or not val_records:
        raise DistillError(
            f"need at least 2 usable teacher records to train and validate, got {len(records)}"
        )
    train_ex = [encode_record(tokenizer, r, cfg.max_seq_len) for r in train_records]
    val_ex = [encode_record(tokenizer, r, cfg.max_seq_len) for r in val_records]
    val_set = val_batches(val_ex, cfg.batch_size, cfg.eval_batches)
    done = _finished_run(out_dir, cfg, student_spec, [r.id for r in val_records], len(train_ex))
    if done is not None:  # the same run already finished: nothing to redo
        return done

    # ---- models: the teacher is frozen and only predicts; the student is what the optimizer moves
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval().requires_grad_(False)
    teacher.to(accelerator.device)
    # picks the layers for select: block and ranks the MLP channels for width pruning
    calibration = collate(train_ex[: max(cfg.batch_size, 32)], pad_id=0)
    student, student_info = load_student(student_spec, teacher, calibration)
    trimmed_tokenizer = None
    if student_spec.vocab == "task":  # the student keeps only the tokens its task uses
        train_ex, val_ex, trimmed_tokenizer = _trim_vocab(
            student, teacher_dir, train_ex, val_ex, student_spec
        )
        val_set = val_batches(val_ex, cfg.batch_size, cfg.eval_batches)
        student_info["vocab_size"] = student.config.vocab_size
    if cfg.freeze_embeddings:
        student.get_input_embeddings().requires_grad_(False)  # tied: the head stays the teacher's too
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.learning_rate, betas=(0.9, 0.95), weight_decay=cfg.weight_decay
    )
    student, optimizer = accelerator.prepare(student, optimizer)

    resolved = {
        "train": cfg.model_dump(),
        "student": {**student_spec.model_dump(), **student_info},
        "teacher_dir": str(teacher_dir),
        "records": {"train": len(train_ex), "val": len(val_ex)},
        "val_ids": [r.id for r in val_records],
        "world_size": accelerator.num_processes,
        "versions": _versions(),
        **(context or {}),
    }

    # ---- resume: the checkpoint holds the student, the optimizer and the step it reached
    ckpt = out_dir / "checkpoint"
    metrics = out_dir / "metrics.jsonl"
    step = 0
    if (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        _check_same_run(state["train"], cfg)
        accelerator.unwrap_model(student).load_state_dict(torch.load(ckpt / "student.pt", map_location="cpu"))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu"))
        step = state["step"]
        if main:
            _keep_metrics_up_to(metrics, step)
    elif main and metrics.exists():
        metrics.unlink()  # a fresh start: no stale curve from an earlier attempt
    start = step

    def forward(batch: dict[str, torch.Tensor]) -> DistillLoss:
        ids, mask = batch["input_ids"].to(accelerator.device), batch["attention_mask"].to(accelerator.device)
        if "topk_ids" in batch:  # stage 1 stored the teacher's top-k: no teacher pass
            # the head only where something is learned: from the first answer position on (the head
            # over a 49k vocabulary costs more than a small student's body on the prompt positions)
            learned = (batch["targets"] != IGNORE).any(dim=0).nonzero()
            first = int(learned[0]) if len(learned) else ids.shape[1] - 1
            logits = student(input_ids=ids, attention_mask=mask, logits_to_keep=ids.shape[1] - first).logits
            return topk_distill_loss(
                logits,
                batch["topk_ids"][:, first:].to(accelerator.device),
                batch["topk_logprobs"][:, first:].to(accelerator.device),
                batch["targets"][:, first:].to(accelerator.device),
                cfg.temperature,
                cfg.alpha,
            )
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, attention_mask=mask).logits  # (B, L, V)
        s_logits = student(input_ids=ids, attention_mask=mask).logits  # (B, L, V)
        return distill_loss(
            s_logits, t_logits, batch["targets"].to(accelerator.device), cfg.temperature, cfg.alpha
        )

    @torch.no_grad()
    def estimate_loss() -> dict[str, float]:
        student.eval()
        parts = [forward(b) for b in val_set]
        student.train()
        return {k: sum(float(getattr(p, k)) for p in parts) / len(parts) for k in ("loss", "kl", "ce")}

    def save_checkpoint() -> None:
        accelerator.wait_for_everyone()
        if main:  # write beside, then swap: a kill never leaves half a checkpoint
            tmp = out_dir / "checkpoint.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            torch.save(accelerator.unwrap_model(student).state_dict(), tmp / "student.pt")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps({"step": step, "train": cfg.model_dump()}))
            shutil.rmtree(ckpt, ignore_errors=True)
            os.replace(tmp, ckpt)

    # ---- the loop
    student.train()
    rank, world = accelerator.process_index, accelerator.num_processes
    val: dict[str, float] | None = None
    while step < cfg.max_steps:
        lr = get_lr(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        if step % cfg.eval_interval == 0:
            val = estimate_loss()
            if main:
                _append_jsonl(metrics, {"step": step, **{f"val_{k}": v for k, v in val.items()}})

        totals = {"loss": 0.0, "kl": 0.0, "ce": 0.0}
        for micro in range(cfg.grad_accum):
            batch = get_batch(train_ex, cfg.batch_size, cfg.seed, step, micro, cfg.grad_accum, rank, world)
            last = micro == cfg.grad_accum - 1
            with nullcontext() if last else accelerator.no_sync(student):  # sync gradients once per step
                parts = forward(batch)
                accelerator.backward(parts.loss / cfg.grad_accum)
            for k in totals:
                totals[k] += float(getattr(parts, k).detach()) / cfg.grad_accum
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        if main:
            _append_jsonl(metrics, {"step": step, "lr": lr, **totals})
        if advance:
            advance(1, loss=f"{totals['loss']:.3f}", val=f"{val['loss']:.3f}" if val else "-")
        if step % cfg.checkpoint_interval == 0 or step == cfg.max_steps:
            save_checkpoint()
        if stop_after is not None and step - start >= stop_after and step < cfg.max_steps:
            return TrainResult(out_dir / "student", step, val["loss"] if val else None, finished=False)

    # ---- the end: a last validation, the student as a Hugging Face folder, the resolved config
    val = estimate_loss()
    student_dir = out_dir / "student"
    if main:
        _append_jsonl(metrics, {"step": step, **{f"val_{k}": v for k, v in val.items()}})
        resolved["final"] = {"step": step, "val": val}
        model = accelerator.unwrap_model(student)
        model.config.use_cache = True
        model.save_pretrained(student_dir)
        if trimmed_tokenizer is not None:
            from build_side.distill.vocab import save_tokenizer

            save_tokenizer(teacher_dir, trimmed_tokenizer, student_dir)
        else:
            tokenizer.save_pretrained(student_dir)
        for folder in (out_dir, student_dir):
            (folder / "distill_config.json").write_text(json.dumps(resolved, indent=2, default=str))
        shutil.rmtree(ckpt, ignore_errors=True)
    accelerator.wait_for_everyone()
    return TrainResult(student_dir, step, val["loss"], finished=True)


def _trim_vocab(
    student: Any, teacher_dir: Path, train_ex: list, val_ex: list, spec: StudentSpec
) -> tuple[list, list, dict[str, Any]]:
    """Trim the student's vocabulary to the tokens of the examples; the examples renumbered."""
    from dataclasses import replace

    from build_side.distill.vocab import load_tokenizer_json, task_vocab, trim_model, trim_tokenizer

    if not all(e.topk_ids for e in train_ex + val_ex):
        raise DistillError("student vocab: task needs the teacher's stored top-k (generate.top_logprobs > 0)")
    tok = load_tokenizer_json(teacher_dir)
    used = {t for e in train_ex + val_ex for t in e.inputs + e.targets if t != IGNORE}
    keep = task_vocab(tok, used, spec.vocab_base_merges)
    new_id = {old: new for new, old in enumerate(keep)}

    def remap(e: Any) -> Any:
        ids = [[new_id.get(t, 0) for t in row] for row in e.topk_ids]
        lps = [  # a teacher candidate the student cannot say: no probability left for it
            [lp if t in new_id else -1e4 for t, lp in zip(row, lp_row, strict=True)]
            for row, lp_row in zip(e.topk_ids, e.topk_logprobs, strict=True)
        ]
        return replace(
            e,
            inputs=[new_id[t] for t in e.inputs],
            targets=[t if t == IGNORE else new_id[t] for t in e.targets],
            topk_ids=ids,
            topk_logprobs=lps,
        )

    trim_model(student, keep)
    return [remap(e) for e in train_ex], [remap(e) for e in val_ex], trim_tokenizer(tok, keep)


def _finished_run(
    out_dir: Path, cfg: TrainSettings, spec: StudentSpec, val_ids: list[str], n_train: int
) -> TrainResult | None:
    """The result of an earlier call that finished with the same settings and data, if any."""
    try:
        saved = json.loads((out_dir / "distill_config.json").read_text())
    except (OSError, ValueError):
        return None
    same = (
        saved.get("train") == cfg.model_dump()
        and all(saved.get("student", {}).get(k) == v for k, v in spec.model_dump().items())
        and saved.get("val_ids") == val_ids
        and saved.get("records", {}).get("train") == n_train
    )
    if not same or "final" not in saved or not (out_dir / "student" / "config.json").is_file():
        return None
    return TrainResult(
        out_dir / "student", saved["final"]["step"], saved["final"]["val"]["loss"], finished=True
    )


def _check_same_run(saved: dict[str, Any], cfg: TrainSettings) -> None:
    now = cfg.model_dump()
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        raise DistillError(
            f"the checkpoint was made with different settings ({', '.join(changed)}); "
            "resume with the same recipe, or train into a new output folder"
        )


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu and xpu.is_available()) or torch.backends.mps.is_available()


def _versions() -> dict[str, str]:
    import accelerate
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
    }
