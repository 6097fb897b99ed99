"""The shipped task data and recipes: reproducible from their generator, valid, split as intended."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from build_side.finetune import configs_from_section, load_examples
from build_side.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
DATA, RECIPES = REPO / "manifests" / "data", REPO / "manifests" / "recipes"


def test_generator_reproduces_the_committed_data(tmp_path: Path) -> None:
    script = tmp_path / "generate.py"
    script.write_text((DATA / "generate.py").read_text())
    subprocess.run([sys.executable, str(script)], check=True)
    for name in ("intents.jsonl", "commands.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_recipes_are_valid_and_split_stratified() -> None:
    load_recipe(RECIPES / "finetune-smollm2-intents.yaml")  # a pipeline recipe as well
    doc = yaml.safe_load((RECIPES / "finetune-smollm2-ops-adapters.yaml").read_text())
    configs = {c.name: c for c in configs_from_section(doc["finetune"], RECIPES)}
    assert set(configs) == {"intents", "commands"}
    train, val = load_examples(configs["intents"].data, configs["intents"].train.seed)
    assert (len(train), len(val)) == (272, 48) and Counter(e.label for e in val) == dict.fromkeys(
        ["deploy", "rollback", "status", "logs", "restart", "bench", "stop", "publish"], 6
    )
    assert all(e.response == e.label for e in train + val)
    _, val = load_examples(configs["commands"].data, configs["commands"].train.seed)
    commands = [json.loads(e.response) for e in val]
    assert all(c["action"] == e.label for c, e in zip(commands, val, strict=True))
