"""Training data: read JSON/JSONL records, render them through a template, split, tokenize.

A record is either any object whose fields the template names (`{input}`, `{output}`, ...) or a chat
`{"messages": [{"role", "content"}, ...]}` whose last turn is the assistant's answer. Every problem
is a `DataError` that names the file, the line and the field, so a bad line in a thousand is found
at once. Only the response tokens are trained on: the prompt's labels are masked with -100.
"""

from __future__ import annotations

import json
import random
import string
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build_side.finetune.config import DataSettings, PromptTemplate
from edge_agent.errors import DataError

ROLES = ("system", "user", "assistant")
IGNORE = -100  # label value that the loss skips


@dataclass(frozen=True)
class Record:
    fields: dict[str, Any]
    file: Path
    line: int


@dataclass(frozen=True)
class Example:
    """One rendered record: the prompt (chat turns or plain text) and the answer to learn."""

    prompt: list[dict[str, str]] | str
    response: str
    label: str | None
    where: str  # file:line, for messages about this example


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    truncated: bool = False
    example: Example | None = field(default=None, repr=False)


# -- reading ------------------------------------------------------------------------------------


def load_records(path: Path) -> list[Record]:
    """Every record of a .jsonl (one object per line) or .json (an array of objects) file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, None, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, None, None, f"cannot read ({exc})") from exc
    records = _read_json_array(path, text) if text.lstrip().startswith("[") else _read_jsonl(path, text)
    if not records:
        raise DataError(path, None, None, "no records")
    return records


def _read_jsonl(path: Path, text: str) -> list[Record]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, number, None, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(value, dict):
            raise DataError(path, number, None, "a record must be a JSON object")
        records.append(Record(value, path, number))
    return records


def _read_json_array(path: Path, text: str) -> list[Record]:
    """Decode the array one element at a time, so each record keeps the line it starts on."""
    decoder = json.JSONDecoder()
    records: list[Record] = []
    pos = text.index("[") + 1

    def line_at(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    def skip(p: int) -> int:
        while p < len(text) and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip(pos)
    while pos < len(text) and text[pos] != "]":
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(
                path, exc.lineno, None, f"not valid JSON ({exc.msg}, column {exc.colno})"
            ) from None
        if not isinstance(value, dict):
            raise DataError(path, line_at(pos), None, "a record must be a JSON object")
        records.append(Record(value, path, line_at(pos)))
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
        elif pos < len(text) and text[pos] != "]":
            raise DataError(path, line_at(pos), None, "expected ',' or ']' between records")
    if pos >= len(text):
        raise DataError(path, line_at(len(text)), None, "the array is not closed with ']'")
    return records


# -- rendering ----------------------------------------------------------------------------------


def template_fields(text: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


def _text_field(record: Record, name: str, why: str) -> str:
    if name not in record.fields:
        raise DataError(record.file, record.line, name, f"missing ({why})")
    value = record.fields[name]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(record.file, record.line, name, f"must be a string, got {type(value).__name__}")
    return str(value)


def _fill(record: Record, template: str, what: str) -> str:
    values = {
        n: _text_field(record, n, f"the {what} template uses {{{n}}}") for n in template_fields(template)
    }
    return template.format_map(values)


def _chat_turns(record: Record) -> list[dict[str, str]]:
    messages = record.fields["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(record.file, record.line, "messages", "must be a non-empty list of turns")
    turns = []
    for i, turn in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(turn, dict):
            raise DataError(record.file, record.line, where, "must be an object {role, content}")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise DataError(
                record.file, record.line, f"{where}.role", f"must be one of {ROLES}, got {role!r}"
            )
        if not isinstance(content, str):
            raise DataError(record.file, record.line, f"{where}.content", "must be a string")
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != "assistant":
        raise DataError(
            record.file,
            record.line,
            f"messages[{len(turns) - 1}].role",
            "the last turn must be the assistant's",
        )
    if len(turns) < 2:
        raise DataError(record.file, record.line, "messages", "needs a turn before the assistant's answer")
    return turns


def render(record: Record, template: PromptTemplate, label_field: str | None) -> Example:
    """A record -> the prompt and the response, through the template or its own chat turns."""
    label = None
    if label_field and label_field in record.fields:
        label = _text_field(record, label_field, "label")
    where = f"{record.file}:{record.line}"
    if "messages" in record.fields:
        turns = _chat_turns(record)
        prompt: list[dict[str, str]] | str = turns[:-1]
        response = turns[-1]["content"]
        if template.system and turns[0]["role"] != "system":
            prompt = [{"role": "system", "content": template.system}, *turns[:-1]]
    else:
        user = _fill(record, template.prompt, "prompt")
        response = _fill(record, template.response, "response")
        if template.chat:
            system = [{"role": "system", "content": template.system}] if template.system else []
            prompt = [*system, {"role": "user", "content": user}]
        else:
            prompt = user
    if not response.strip():
        raise DataError(record.file, record.line, None, "the response is empty")
    return Example(prompt, response, label, where)


def load_examples(settings: DataSettings, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, validation): from two files, or one file split with `val_fraction`."""
    records = load_records(settings.train)
    if settings.validation is not None:
        train, val = records, load_records(settings.validation)
    else:
        train, val = split_records(records, settings.val_fraction, settings.label_field, seed)
    t = settings.template
    return [render(r, t, settings.label_field) for r in train], [
        render(r, t, settings.label_field) for r in val
    ]


# -- splitting ----------------------------------------------------------------------------------


def split_records(
    records: list[Record], fraction: float, label_field: str | None, seed: int
) -> tuple[list[Record], list[Record]]:
    """Hold out `fraction` for validation; per label when every record carries one (stratified)."""
    if len(records) < 2:
        raise DataError(
            records[0].file, None, None, "needs at least 2 records to hold some out for validation"
        )
    rng = random.Random(seed)
    labelled = label_field is not None and all(label_field in r.fields for r in records)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[str(r.fields[label_field]) if labelled else ""].append(i)
    held: set[int] = set()
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        k = round(len(members) * fraction)
        if len(members) >= 2:  # a label seen once stays in training
            k = max(1, min(k, len(members) - 1))
        held.update(members[:k])
    if not held:
        held.add(rng.randrange(len(records)))
    train = [r for i, r in enumerate(records) if i not in held]
    val = [r for i, r in enumerate(records) if i in held]
    return train, val


# -- tokenizing ---------------------------------------------------------------------------------


def prompt_text(tokenizer: Any, example: Example) -> str:
    """The exact text the model sees before its answer, at training and at inference."""
    if isinstance(example.prompt, str):
        return example.prompt
    if not getattr(tokenizer, "chat_template", None):
        return "".join(f"{t['role']}: {t['content']}\n" for t in example.prompt) + "assistant: "
    return tokenizer.apply_chat_template(example.prompt, tokenize=False, add_generation_prompt=True)


def response_text(tokenizer: Any, example: Example) -> str:
    """The answer as the template closes it (e.g. `...<|im_end|>\\n`), or answer + EOS."""
    if isinstance(example.prompt, list) and getattr(tokenizer, "chat_template", None):
        turns = [*example.prompt, {"role": "assistant", "content": example.response}]
        full = tokenizer.apply_chat_template(turns, tokenize=False)
        head = prompt_text(tokenizer, example)
        if full.startswith(head):
            return full[len(head) :]
    return example.response + (tokenizer.eos_token or "")


def encode(tokenizer: Any, example: Example, max_length: int) -> Encoded:
    """Token ids and labels; prompt and answer are tokenized apart so the seam matches inference."""
    prompt_ids = tokenizer(prompt_text(tokenizer, example), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(response_text(tokenizer, example), add_special_tokens=False)["input_ids"]
    truncated = len(prompt_ids) + len(answer_ids) > max_length
    if truncated:
        answer_ids = answer_ids[: max_length - 1]
        prompt_ids = prompt_ids[len(prompt_ids) - (max_length - len(answer_ids)) :]
    ids = prompt_ids + answer_ids
    labels = [IGNORE] * len(prompt_ids) + answer_ids
    return Encoded(ids, labels, len(prompt_ids), truncated, example)
