"""Vocabulary trimming: a task student keeps only the tokens its task uses.

SmolLM2-135M spends 28M of its 135M parameters on a 49,152-token embedding (tied to the LM head);
an operator-request task uses a few thousand. The student keeps: every added/special token, the 256
byte-level symbols (so any text still encodes), the results of the first `base_merges` BPE merges
(the commonest pieces, so unseen words split into familiar parts), every token of the training
sequences, and, closed over the merges, every token a kept token is built from. The merges kept are
those whose two parts and result are all kept. For any text whose tokens were all kept, the trimmed
BPE reproduces the teacher's segmentation exactly: every merge the full tokenizer applied is still
there and still the best-ranked applicable one. Ids are kept in the teacher's order, so the special
tokens at the start keep their ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from edge_agent.errors import DistillError


def _byte_alphabet() -> set[str]:
    """The 256 symbols byte-level BPE writes bytes as (GPT-2's bytes_to_unicode)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c) for c in cs}


def _merges(model: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]  # type: ignore[misc]


def load_tokenizer_json(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "tokenizer.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DistillError(f"{path}: vocabulary trimming needs a tokenizer.json ({exc})") from exc
    if doc.get("model", {}).get("type") != "BPE":
        raise DistillError(f"{path}: vocabulary trimming supports byte-level BPE tokenizers only")
    return doc


def task_vocab(tok: dict[str, Any], used: Iterable[int], base_merges: int = 0) -> list[int]:
    """The teacher ids the student keeps, ascending."""
    model = tok["model"]
    vocab: dict[str, int] = model["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    merges = _merges(model)
    parents: dict[str, list[tuple[str, str]]] = {}
    for a, b in merges:
        parents.setdefault(a + b, []).append((a, b))
    alphabet = _byte_alphabet()
    keep_tokens = {t for t in vocab if t in alphabet}
    keep_tokens |= {a + b for a, b in merges[:base_merges]}
    keep_ids = {a["id"] for a in tok.get("added_tokens", [])}
    for i in used:
        if i in by_id:
            keep_tokens.add(by_id[i])
        elif i not in keep_ids:
            raise DistillError(f"token id {i} is not in the tokenizer's vocabulary")
    todo = list(keep_tokens)
    while todo:  # close over the merges: every part a kept token is built from
        for a, b in parents.get(todo.pop(), []):
            for part in (a, b):
                if part not in keep_tokens:
                    keep_tokens.add(part)
                    todo.append(part)
    keep_ids |= {vocab[t] for t in keep_tokens if t in vocab}
    return sorted(keep_ids)


def trim_tokenizer(tok: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    """tokenizer.json for the kept ids, renumbered 0..n-1 in the same order."""
    new_id = {old: new for new, old in enumerate(keep)}
    out = json.loads(json.dumps(tok))
    model = out["model"]
    vocab = {t: new_id[i] for t, i in model["vocab"].items() if i in new_id}
    kept = set(vocab)
    merges = [(a, b) for a, b in _merges(model) if a in kept and b in kept and a + b in kept]
    as_lists = bool(model["merges"]) and isinstance(model["merges"][0], list)
    model["vocab"] = vocab
    model["merges"] = [[a, b] if as_lists else f"{a} {b}" for a, b in merges]
    added = []
    for a in out.get("added_tokens", []):
        if a["id"] in new_id:
            added.append({**a, "id": new_id[a["id"]]})
    out["added_tokens"] = added
    return out


def trim_model(model: Any, keep: list[int]) -> None:
    """Keep the embedding rows (and LM head rows) of `keep`, in place; the config follows."""
    index = torch.tensor(keep, dtype=torch.long)
    old = model.get_input_embeddings()
    emb = torch.nn.Embedding(len(keep), old.weight.shape[1], dtype=old.weight.dtype)
    emb.weight.data.copy_(old.weight.data.index_select(0, index))
    model.set_input_embeddings(emb)
    tied = getattr(model.config, "tie_word_embeddings", False)
    head = model.get_output_embeddings()
    new_head = torch.nn.Linear(
        head.in_features, len(keep), bias=head.bias is not None, dtype=head.weight.dtype
    )
    if not tied:
        new_head.weight.data.copy_(head.weight.data.index_select(0, index))
        if head.bias is not None:
            new_head.bias.data.copy_(head.bias.data.index_select(0, index))
    model.set_output_embeddings(new_head)
    model.config.vocab_size = len(keep)
    if tied:
        model.tie_weights()
    new_id = {old_i: new for new, old_i in enumerate(keep)}
    for cfg in (model.config, model.generation_config):
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(cfg, name, None)
            if isinstance(value, int):
                setattr(cfg, name, new_id.get(value, value))
            elif isinstance(value, list):
                setattr(cfg, name, [new_id.get(v, v) for v in value])


def save_tokenizer(teacher_dir: Path, tok: dict[str, Any], out: Path) -> None:
    """The teacher's tokenizer files with the trimmed tokenizer.json."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (Path(teacher_dir) / name).is_file():
            shutil.copy(Path(teacher_dir) / name, out / name)
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
