"""Fixtures of the fine-tuning tests: a small learnable task and settings sized for the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from build_side.finetune import FinetuneConfig

COLOURS = {"apple": "red", "cherry": "red", "grass": "green", "leaf": "green", "sky": "blue", "sea": "blue"}
FILLERS = ["please tell me", "what colour is", "quick question about", "the", "I saw a", "name the colour of"]


def write_task(path: Path, n: int = 72, seed: int = 0) -> Path:
    """`{input, output, label}`: the colour of the thing named; learnable in a few steps."""
    rng = random.Random(seed)
    things = sorted(COLOURS)
    with path.open("w") as f:
        for i in range(n):
            thing = things[i % len(things)]
            text = f"{rng.choice(FILLERS)} {thing} {rng.randint(0, 99)}"
            f.write(json.dumps({"input": text, "output": COLOURS[thing], "label": COLOURS[thing]}) + "\n")
    return path


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    return write_task(tmp_path / "colours.jsonl")


def tiny_config(data: Path, **over: Any) -> FinetuneConfig:
    """LoRA on the 2-layer tiny model: a high learning rate, a dozen steps, answers of a token or two."""
    raw: dict[str, Any] = {
        "name": "colours",
        "data": {"train": str(data), "template": {"system": "Answer with a colour."}, "max_length": 64},
        "lora": {
            "r": 8,
            "alpha": 16,
            "dropout": 0.0,
            "target_modules": ["q_proj", "v_proj", "down_proj", "lm_head"],
        },
        "train": {
            "max_steps": 12,
            "batch_size": 8,
            "lr": 2e-2,
            "eval_every": 4,
            "warmup_ratio": 0.1,
            "seed": 0,
        },
        "eval": {"max_new_tokens": 2, "batch_size": 16},
    }
    for dotted, value in over.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return FinetuneConfig.model_validate(raw)
