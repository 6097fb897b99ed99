"""The operator-request task's held-out set and its scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from build_side.tasks import ops
from edge_agent.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def test_heldout_set_is_valid_and_apart_from_the_training_data() -> None:
    requests = ops.load_requests()
    assert len(requests) >= 64
    assert {r.intent for r in requests} == set(ops.INTENTS)
    assert all(r.command.action == r.intent for r in requests)
    trained = set()
    for name in ("intents.jsonl", "commands.jsonl"):
        for line in (REPO / "manifests" / "data" / name).read_text().splitlines():
            trained.add(json.loads(line)["input"].lower())
    assert not {r.input.lower() for r in requests} & trained
    # written apart: none of the training generator's devices appear in the held-out requests
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("gen", REPO / "manifests" / "data" / "generate.py")
    gen = module_from_spec(spec)
    spec.loader.exec_module(gen)  # type: ignore[union-attr]
    for r in requests:
        words = set(r.input.lower().replace("?", " ").replace(",", " ").split())
        assert not words & set(gen.DEVICES), r.input


def test_scoring_parses_commands_and_normalises_intents() -> None:
    r = ops.Request.model_validate(
        {
            "input": "publish x 1.0.0",
            "intent": "publish",
            "command": {"action": "publish", "bundle": "x@1.0.0", "channel": "stable"},
        }
    )
    assert ops.intent_hit(" Publish.\nmore", r)
    assert not ops.intent_hit("deploy", r)
    assert ops.command_hit('{"channel": "stable", "action": "publish", "bundle": "x@1.0.0"}', r)
    assert not ops.command_hit('{"action": "publish", "bundle": "x@1.0.0"}', r)
    assert not ops.command_hit('{"action": "publish", "bundle": "x@1.0.0", "channel": "stable"', r)
    answers = iter(['{"action": "publish", "bundle": "x@1.0.0", "channel": "stable"}', "nonsense"])
    s = ops.score_skill("command", [r, r], lambda _: next(answers))
    assert (s.score, s.valid_json, len(s.misses)) == (0.5, 0.5, 1)


def test_a_bad_line_names_file_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "req.jsonl"
    good = {"input": "stop it", "intent": "stop", "command": {"action": "stop", "target": "fleet"}}
    bad = {"input": "x", "intent": "dance", "command": {"action": "stop"}}
    f.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"req.jsonl:3: intent: "):
        ops.load_requests(f)
