"""The operator-request task: a fleet operator's console request as an intent and as a JSON command.

Two skills of one task, each an adapter (or one student) on the device:
- intent:  one word of eight (deploy, rollback, status, logs, restart, bench, stop, publish);
- command: one JSON object {action, target, bundle?, channel?} with the slots filled from the request.

`manifests/eval/ops_heldout.jsonl` is written by hand, apart from every generator of training data
(its own phrasings, devices, groups and bundles), so a score on it measures generalisation rather than
template recall. A command scores when its JSON parses to the expected object (key order aside).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.errors import DataError

REPO = Path(__file__).resolve().parents[2]
HELDOUT = REPO / "manifests" / "eval" / "ops_heldout.jsonl"
INTENTS = ("deploy", "rollback", "status", "logs", "restart", "bench", "stop", "publish")
Skill = Literal["intent", "command"]


class Command(BaseModel):
    """What a request means as an operator command (`extra` keys are refused: the schema is closed)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["deploy", "rollback", "status", "logs", "restart", "bench", "stop", "publish"]
    target: str | None = Field(None, description="device:ID, group:NAME or fleet; none for publish")
    bundle: str | None = Field(None, description="name@version, or a name alone")
    channel: str | None = None

    def as_dict(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


class Request(BaseModel):
    """One held-out request with both answers it should get."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1)
    intent: Literal["deploy", "rollback", "status", "logs", "restart", "bench", "stop", "publish"]
    command: Command


def load_requests(path: Path = HELDOUT) -> list[Request]:
    """Read a request file; a bad line raises DataError naming the file, the line and the field."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(path, None, None, f"cannot read ({exc})") from exc
    requests = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            requests.append(Request.model_validate_json(line))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(line)"
            raise DataError(path, number, field, err["msg"]) from exc
    if not requests:
        raise DataError(path, None, None, "no requests")
    return requests


def normalize_intent(answer: str) -> str:
    """The first word of the first line, lower-cased, without punctuation around it."""
    first = answer.strip().splitlines()[0] if answer.strip() else ""
    word = first.split()[0] if first.split() else ""
    return word.lower().strip(".,;:!?\"'`")


def parse_command(answer: str) -> dict | None:
    """The answer's JSON object, or None when it is not one."""
    try:
        value = json.loads(answer.strip())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def intent_hit(answer: str, request: Request) -> bool:
    return normalize_intent(answer) == request.intent


def command_hit(answer: str, request: Request) -> bool:
    return parse_command(answer) == request.command.as_dict()


class SkillScore(BaseModel):
    skill: Skill
    examples: int
    score: float = Field(description="intent accuracy, or command exact match (parsed JSON equal)")
    valid_json: float | None = Field(None, description="commands only: share of answers that parse")
    misses: list[dict[str, str]] = Field(default_factory=list, description="a few wrong answers")


def score_skill(
    skill: Skill, requests: Iterable[Request], answer: Callable[[Request], str], keep_misses: int = 5
) -> SkillScore:
    """Ask `answer` for every request and score the answers for one skill."""
    requests = list(requests)
    hits = valid = 0
    misses: list[dict[str, str]] = []
    for request in requests:
        text = answer(request)
        if skill == "intent":
            hit = intent_hit(text, request)
            expected = request.intent
        else:
            valid += parse_command(text) is not None
            hit = command_hit(text, request)
            expected = json.dumps(request.command.as_dict())
        hits += hit
        if not hit and len(misses) < keep_misses:
            misses.append({"input": request.input, "expected": expected, "answer": text})
    n = len(requests)
    return SkillScore(
        skill=skill,
        examples=n,
        score=round(hits / n, 4) if n else 0.0,
        valid_json=round(valid / n, 4) if skill == "command" and n else None,
        misses=misses,
    )


__all__ = [
    "HELDOUT",
    "INTENTS",
    "Command",
    "Request",
    "SkillScore",
    "command_hit",
    "intent_hit",
    "load_requests",
    "normalize_intent",
    "parse_command",
    "score_skill",
]
