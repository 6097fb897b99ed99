"""Stage 1 with a real (tiny) local teacher: records are complete, and an interrupted run resumes."""

from __future__ import annotations

import json
from pathlib import Path

from build_side.distill.config import GenerationSettings
from build_side.distill.generate import generate_records
from build_side.distill.records import Prompt, read_prompts, read_records
from build_side.distill.teachers import TransformersTeacher

SETTINGS = GenerationSettings(max_new_tokens=6, batch_size=2)


def prompts(n: int) -> list[Prompt]:
    return [Prompt(id=f"q{i}", prompt=f"Question number {i}?") for i in range(n)]


def test_generation_resumes_after_interruption(tiny_model_dir: Path, tmp_path: Path) -> None:
    teacher = TransformersTeacher(tiny_model_dir, info={"source": "tiny"})
    out = tmp_path / "teacher.jsonl"

    first = generate_records(teacher, prompts(5), out, SETTINGS, max_batches=1)  # "killed" after one batch
    assert (first.written, first.skipped) == (2, 0)
    with out.open("a") as f:  # the kill came mid-write of the next record
        f.write('{"id": "q2", "input": "Quest')

    seen: list[int] = []
    second = generate_records(teacher, prompts(5), out, SETTINGS, advance=seen.append)
    assert (second.written, second.skipped, sum(seen)) == (3, 2, 3)
    records = read_records(out)
    assert [r.id for r in records] == ["q0", "q1", "q2", "q3", "q4"]
    assert all(json.loads(line) for line in out.read_text().splitlines())  # the cut line is gone

    r = records[0]
    assert r.input == "Question number 0?"
    assert r.teacher == {"kind": "transformers", "source": "tiny"}
    assert r.generation["max_new_tokens"] == 6 and r.generation["temperature"] == 0.0
    # random weights rarely say EOS: the tiny teacher runs into the limit, which validation will see
    assert r.finish_reason in ("stop", "length") and 1 <= r.output_tokens <= 6

    third = generate_records(teacher, prompts(5), out, SETTINGS)
    assert (third.written, third.skipped) == (0, 5)


def test_greedy_batches_match_single_prompts(tiny_model_dir: Path) -> None:
    """Left padding must not change an answer: batched and one-by-one greedy outputs agree."""
    teacher = TransformersTeacher(tiny_model_dir)
    texts = ["Hi?", "A much longer question about many different things?"]
    batched = teacher.complete(texts, SETTINGS)
    single = [teacher.complete([t], SETTINGS)[0] for t in texts]
    assert [c.text for c in batched] == [c.text for c in single]


def test_prompt_file_accepts_input_key_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"id": "1", "input": "one"}\n\n{"id": "2", "prompt": "two"}\n{"id": "3", "prompt": "x"}\n'
    )
    assert [(p.id, p.prompt) for p in read_prompts(path, limit=2)] == [("1", "one"), ("2", "two")]


def test_stage1_stores_the_teachers_topk_aligned_with_its_tokens(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Each answer position carries the teacher's k best ids and log-probs; greedy picks the first,
    and the student's training batch puts them where the answer's tokens are predicted."""
    from build_side.distill.data import collate, encode_record

    teacher = TransformersTeacher(tiny_model_dir)
    out = tmp_path / "teacher.jsonl"
    settings = GenerationSettings(max_new_tokens=5, batch_size=3, top_logprobs=4, chat=False)
    generate_records(teacher, prompts(3), out, settings)
    records = read_records(out)
    assert [r.generation["top_logprobs"] for r in records] == [4, 4, 4]
    for r in records:
        assert (
            r.output_ids and len(r.output_ids) == len(r.topk_ids) == len(r.topk_logprobs) == r.output_tokens
        )
        assert [row[0] for row in r.topk_ids] == r.output_ids  # greedy: the most likely token
        assert all(len(row) == 4 and row == sorted(row, reverse=True) for row in r.topk_logprobs)
        assert all(v <= 0.0 for row in r.topk_logprobs for v in row)
    example = encode_record(teacher.tokenizer, records[0], max_len=256)
    batch = collate([example], pad_id=0)
    learned = (batch["targets"][0] != -100).nonzero().flatten()
    assert batch["targets"][0, learned].tolist() == records[0].output_ids
    assert batch["topk_ids"][0, learned, 0].tolist() == records[0].output_ids
