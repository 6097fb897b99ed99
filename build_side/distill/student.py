"""The student: a given smaller model, or the teacher with only some of its layers kept.

A derived student starts from the teacher's own weights (embeddings, final norm, head, and each kept
block copied as is), so it begins close to the teacher and distillation only has to heal the gaps.
Which layers: evenly spaced (first and last included), or the teacher minus the one contiguous block
whose removal moves the next-token distributions least (KL) on a calibration batch of the teacher's
answers (`select: block`). On
SmolLM2-135M, keeping 12 of 30 layers, the block choice [0-2, 21-29] starts at a held-out perplexity
of ~1.6k against ~7.7M for evenly spaced layers (the teacher: 40).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from build_side.distill.config import StudentSpec
from edge_agent.errors import DistillError

_LAYER_KEY = re.compile(r"^(.*\.layers\.)(\d+)(\..+)$")


def even_layers(total: int, keep: int) -> list[int]:
    """`keep` indices out of range(total), evenly spaced, always including 0 and total-1 (keep >= 2)."""
    if not 1 <= keep <= total:
        raise DistillError(f"cannot keep {keep} of {total} layers")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def chosen_layers(spec: StudentSpec, total: int) -> list[int]:
    if spec.layers is None and spec.keep_layers is None:  # width only: every layer stays
        return list(range(total))
    if spec.layers is not None:
        layers = sorted(set(spec.layers))
        if len(layers) != len(spec.layers) or not all(0 <= i < total for i in layers):
            raise DistillError(f"student.layers {spec.layers} must be distinct indices in 0..{total - 1}")
        return layers
    assert spec.keep_layers is not None
    return even_layers(total, spec.keep_layers)


def block_candidates(total: int, keep: int) -> list[list[int]]:
    """Every way to keep the first and last layers and drop one contiguous block of total-keep."""
    if not 2 <= keep <= total:
        raise DistillError(f"block selection keeps the first and the last layer: keep 2..{total}, not {keep}")
    drop = total - keep
    return [list(range(start)) + list(range(start + drop, total)) for start in range(1, total - drop)] or [
        list(range(total))
    ]


def pick_block(teacher: Any, keep: int, calibration: dict[str, Any]) -> tuple[list[int], dict[str, float]]:
    """The block candidate whose (untrained) student is closest to the teacher on the calibration
    batch: lowest KL(teacher || student) over the answer tokens."""
    import torch
    import torch.nn.functional as F

    from build_side.distill.loss import IGNORE

    mask = calibration["targets"] != IGNORE
    inputs = {"input_ids": calibration["input_ids"], "attention_mask": calibration["attention_mask"]}
    with torch.no_grad():
        reference = F.log_softmax(teacher(**inputs).logits[mask].float(), dim=-1)
    scores: dict[str, float] = {}
    best: tuple[float, list[int]] | None = None
    for layers in block_candidates(teacher.config.num_hidden_layers, keep):
        student = derive_student(teacher, layers).eval()
        with torch.no_grad():
            logp = F.log_softmax(student(**inputs).logits[mask].float(), dim=-1)
        kl = float(F.kl_div(logp, reference, log_target=True, reduction="batchmean"))
        dropped = sorted(set(range(teacher.config.num_hidden_layers)) - set(layers))
        scores[f"drop {dropped[0]}-{dropped[-1]}" if dropped else "drop none"] = kl
        if best is None or kl < best[0]:
            best = (kl, layers)
    assert best is not None
    return best[1], scores


def derive_student(teacher: Any, layers: list[int]) -> Any:
    """A new model of the teacher's architecture with `layers` only, initialised from the teacher."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):  # per-layer attention kinds (sliding/full) follow their layer
        config.layer_types = [config.layer_types[i] for i in layers]
    student = AutoModelForCausalLM.from_config(config)
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        m = _LAYER_KEY.match(key)
        if m is None:
            state[key] = value.clone()
        elif int(m[2]) in new_index:
            state[f"{m[1]}{new_index[int(m[2])]}{m[3]}"] = value.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    # a tied head has no weight of its own in the state dict; anything else missing is a real mismatch
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise DistillError(
            f"student weights do not line up with the teacher's: missing {missing}, unexpected {unexpected}"
        )
    if config.tie_word_embeddings:
        student.tie_weights()
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student


def check_spec(spec: StudentSpec, config: Any) -> None:
    """A clear error, before any teacher pass or training, for a size the model cannot take."""
    from build_side.distill.prune import check_channels

    if spec.source is not None:
        return
    total = int(config.num_hidden_layers)
    if spec.keep_layers is not None and spec.keep_layers > total:
        raise DistillError(f"student {spec.label()}: cannot keep {spec.keep_layers} of {total} layers")
    if spec.layers is not None:
        chosen_layers(spec, total)
    if spec.mlp_channels is not None:
        check_channels(config, spec.mlp_channels)


def load_student(
    spec: StudentSpec, teacher: Any, calibration: dict[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """The student model and a description of where it came from (saved with the output).
    `calibration` (a collated batch of the teacher's answers) is needed for `select: block`."""
    from transformers import AutoModelForCausalLM

    total = teacher.config.num_hidden_layers
    check_spec(spec, teacher.config)
    if spec.source is None:
        info: dict[str, Any] = {"kind": "derived", "teacher_layers": total}
        if spec.layers is None and spec.keep_layers is not None and spec.select == "block":
            if calibration is None:
                raise DistillError("select: block needs a calibration batch of the teacher's answers")
            assert spec.keep_layers is not None
            layers, scores = pick_block(teacher, spec.keep_layers, calibration)
            info["block_scores"] = scores  # KL to the teacher of each untrained candidate
        else:
            layers = chosen_layers(spec, total)
        info["kept_layers"] = layers
        student = derive_student(teacher, layers)
        if spec.mlp_channels is not None:
            from build_side.distill.prune import channel_importance, prune_mlp

            if calibration is None:
                raise DistillError("width pruning needs a calibration batch of task sequences")
            importance = channel_importance(teacher, calibration)  # ranked on the whole teacher
            info.update(prune_mlp(student, spec.mlp_channels, [importance[i] for i in layers]))
        return student, info

    from build_side.sources import prepare

    prepared = prepare(spec.source)
    try:
        student = AutoModelForCausalLM.from_pretrained(prepared.path)
    except (OSError, ValueError) as exc:
        raise DistillError(f"{spec.source}: cannot load the student ({exc})") from exc
    if student.config.vocab_size != teacher.config.vocab_size:
        raise DistillError(
            f"the student's vocabulary ({student.config.vocab_size}) differs from the teacher's "
            f"({teacher.config.vocab_size}); distillation compares next-token distributions, so both "
            "must share one tokenizer"
        )
    return student, {"kind": "given", **prepared.info()}
