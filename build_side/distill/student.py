"""The student: a given smaller model, or the teacher with only some of its layers kept.

A derived student starts from the teacher's own weights (embeddings, final norm, head, and each kept
block copied as is), so it begins close to the teacher and distillation only has to heal the gaps.
Evenly spaced layers, first and last included, keep both the input and output ends of the stack.
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
    if spec.layers is not None:
        layers = sorted(set(spec.layers))
        if len(layers) != len(spec.layers) or not all(0 <= i < total for i in layers):
            raise DistillError(f"student.layers {spec.layers} must be distinct indices in 0..{total - 1}")
        return layers
    assert spec.keep_layers is not None
    return even_layers(total, spec.keep_layers)


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


def load_student(spec: StudentSpec, teacher: Any) -> tuple[Any, dict[str, Any]]:
    """The student model and a description of where it came from (saved with the output)."""
    from transformers import AutoModelForCausalLM

    total = teacher.config.num_hidden_layers
    if spec.source is None:
        layers = chosen_layers(spec, total)
        info = {"kind": "derived", "teacher_layers": total, "kept_layers": layers}
        return derive_student(teacher, layers), info

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
