"""Reading, rendering, splitting and tokenizing training data; every error names file, line and field."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from build_side.finetune import PromptTemplate, load_records, render, split_records
from build_side.finetune.config import DataSettings
from build_side.finetune.data import IGNORE, encode, load_examples, prompt_text
from edge_agent.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_jsonl_and_json_array_keep_line_numbers(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "a.jsonl", '{"input": "a", "output": "b"}\n\n{"input": "c", "output": "d"}\n')
    assert [(r.line, r.fields["input"]) for r in load_records(jsonl)] == [(1, "a"), (3, "c")]
    array = write(
        tmp_path / "a.json", '[\n  {"input": "a",\n   "output": "b"},\n  {"input": "c", "output": "d"}\n]\n'
    )
    assert [r.line for r in load_records(array)] == [2, 4]


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [
        ('{"input": "a", "output": "b"}\n{"input": "a", "output": }\n', 2, None, "not valid JSON"),
        ('{"input": "a", "output": "b"}\n["a", "b"]\n', 2, None, "must be a JSON object"),
        ('{"input": "a", "output": "b"}\n{"input": "a"}\n', 2, "output", "missing"),
        ('{"input": "a", "output": "b"}\n{"input": "a", "output": ["b"]}\n', 2, "output", "must be a string"),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}\n',
            1,
            "messages[1].role",
            "must be one of",
        ),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', 1, "messages[0].role", "the last turn"),
        ('{"input": "a", "output": "  "}\n', 1, None, "the response is empty"),
    ],
)
def test_bad_records_name_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str | None, problem: str
) -> None:
    path = write(tmp_path / "bad.jsonl", text)
    with pytest.raises(DataError) as err:
        for record in load_records(path):
            render(record, PromptTemplate(), "label")
    assert (err.value.file, err.value.line, err.value.field) == (str(path), line, field)
    assert problem in str(err.value) and str(str(err.value)).startswith(f"{path}:{line}: ")


def test_json_array_error_points_at_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.json", '[\n {"input": "a", "output": "b"},\n {"input": "c" "output": "d"}\n]'
    )
    with pytest.raises(DataError, match=r"bad\.json:3: not valid JSON"):
        load_records(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no records"):
        load_records(write(tmp_path / "empty.jsonl", "\n\n"))


def test_template_fields_and_chat_records(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl",
        json.dumps({"question": "2+2?", "answer": "4", "topic": "maths"})
        + "\n"
        + json.dumps(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
        )
        + "\n",
    )
    first, second = load_records(path)
    template = PromptTemplate(prompt="[{topic}] {question}", response="{answer}", system="Be brief.")
    ex = render(first, template, "label")
    assert ex.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "[maths] 2+2?"},
    ]
    assert (ex.response, ex.label, ex.where) == ("4", None, f"{path}:1")
    chat = render(second, template, "label")
    assert chat.prompt[-1] == {"role": "user", "content": "hi"} and chat.response == "hello"
    with pytest.raises(DataError, match=r"d\.jsonl:1: missing_field: missing \(the prompt template uses"):
        render(first, PromptTemplate(prompt="{missing_field}"), None)
    plain = render(first, PromptTemplate(prompt="Q: {question}\nA:", response=" {answer}", chat=False), None)
    assert plain.prompt == "Q: 2+2?\nA:" and plain.response == " 4"


def test_split_is_stratified_seeded_and_disjoint(tmp_path: Path) -> None:
    counts = {"a": 40, "b": 20, "c": 10, "d": 1}
    lines = [
        json.dumps({"input": f"{k}{i}", "output": k, "label": k}) for k, n in counts.items() for i in range(n)
    ]
    records = load_records(write(tmp_path / "l.jsonl", "\n".join(lines)))
    train, val = split_records(records, 0.2, "label", seed=1)
    assert Counter(r.fields["label"] for r in val) == {"a": 8, "b": 4, "c": 2}  # d, seen once, trains
    assert {r.line for r in train}.isdisjoint(r.line for r in val) and len(train) + len(val) == 71
    again, _ = split_records(records, 0.2, "label", seed=1)
    other, _ = split_records(records, 0.2, "label", seed=2)
    assert [r.line for r in again] == [r.line for r in train] != [r.line for r in other]


def test_split_without_labels_and_a_separate_validation_file(tmp_path: Path) -> None:
    lines = [json.dumps({"input": str(i), "output": "x"}) for i in range(50)]
    path = write(tmp_path / "u.jsonl", "\n".join(lines))
    train, val = split_records(load_records(path), 0.1, "label", seed=0)
    assert (len(train), len(val)) == (45, 5)
    val_file = write(tmp_path / "v.jsonl", lines[0])
    tr, va = load_examples(DataSettings(train=path, validation=val_file), seed=0)
    assert (len(tr), len(va)) == (50, 1)


def test_encode_masks_the_prompt_and_matches_inference(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = write(tmp_path / "e.jsonl", json.dumps({"input": "colour of the sky?", "output": "blue"}))
    ex = render(load_records(path)[0], PromptTemplate(system="Answer with a colour."), None)
    enc = encode(tok, ex, max_length=256)
    prompt_ids = tok(prompt_text(tok, ex), add_special_tokens=False)["input_ids"]
    assert enc.input_ids[: enc.prompt_len] == prompt_ids  # the exact ids the model sees at inference
    assert enc.labels[: enc.prompt_len] == [IGNORE] * enc.prompt_len
    answer = tok.decode(enc.input_ids[enc.prompt_len :])
    assert (
        answer.startswith("blue<|im_end|>")
        and enc.labels[enc.prompt_len :] == enc.input_ids[enc.prompt_len :]
    )
    short = encode(tok, ex, max_length=8)
    assert short.truncated and len(short.input_ids) == 8 and tok.decode(short.input_ids).find("blue") >= 0
