"""Pipeline recipes: one YAML file chains source -> (distill) -> (finetune) -> convert -> bundle -> publish.

    source: smollm2-135m-instruct          # anything `slmops model prepare` accepts
    work_dir: work/pipeline/smollm2        # stage outputs and the pipeline's state (default shown)
    distill: {...}                         # optional: build_side.distill.run_from_recipe settings
    finetune: {...}                        # optional: build_side.finetune.run_from_recipe settings
    convert:
      variants: [cpu-fp32, cpu-int8, {id: cpu-int4, block_size: 32, accuracy_level: 4}]
      eval: {window: 512}                  # quality against cpu-fp32 on manifests/eval/heldout.txt
    bundle: {name: smollm2-135m-instruct, version: 1.0.0, generation_defaults: {...}}
    publish: {registry: work/registry}     # optional

A recipe is validated before anything runs; an error names the key and the line it is on.
Input files (eval text, adapter files) are looked up beside the recipe, then in the working
directory, then in the repository; output paths (work_dir, registry) are relative to the working
directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from build_side.bundle import AdapterFile
from build_side.convert import VariantSpec
from edge_agent.contracts import GenerationDefaults
from edge_agent.contracts.common import Name, SemVer
from edge_agent.errors import RecipeError

REPO = Path(__file__).resolve().parents[1]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipeVariant(VariantSpec):
    """A variant in a recipe: a target name (`cpu-int4`), `ID=TARGET`, or a mapping of settings."""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            vid, _, target = value.partition("=")
            return {"id": vid.strip(), "target": target.strip() or None}
        return value


class EvalSettings(_Section):
    enabled: bool = True
    text: str | None = Field(None, description="held-out text (default: manifests/eval/heldout.txt)")
    window: int = Field(512, ge=2)
    tokens: int | None = Field(None, ge=2, description="score only the first N tokens")
    speed: bool = True


class ConvertSection(_Section):
    variants: list[RecipeVariant] = Field(min_length=1)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    adapters: Literal["merge", "export"] = Field(
        "merge",
        description="merge: fine-tuned LoRA adapters are folded into the weights before convert; "
        "export: each variant is built as a base with LoRA inputs and every adapter ships as its own "
        ".onnx_adapter, picked per request on the device",
    )

    @model_validator(mode="after")
    def _unique(self) -> ConvertSection:
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"variant ids must be unique, got {ids}")
        if self.adapters == "export":
            carried = [v.id for v in self.variants if v.gguf_blocks]
            if carried:
                raise ValueError(
                    f"adapters: export builds bases with LoRA inputs, which carried GGUF blocks cannot "
                    f"take: drop gguf_blocks from {carried}"
                )
        return self


class BundleSection(_Section):
    name: Name
    version: SemVer
    description: str = ""
    task: Literal["chat", "completion"] = "chat"
    variants: list[Name] | None = Field(
        None, description="variant ids to ship (default: every converted one)"
    )
    generation_defaults: GenerationDefaults = Field(default_factory=GenerationDefaults)
    adapters: list[AdapterFile] = Field(default_factory=list, description="ready .onnx_adapter files")


class PublishSection(_Section):
    registry: str | None = Field(None, description="registry directory (default: $SLMOPS_HOME/registry)")
    key: str | None = Field(None, description="private signing key (default: the one in $SLMOPS_HOME/keys)")


class Recipe(_Section):
    source: str
    work_dir: str | None = None
    distill: dict[str, Any] | None = None
    finetune: dict[str, Any] | None = None
    convert: ConvertSection
    bundle: BundleSection
    publish: PublishSection | None = None

    @model_validator(mode="after")
    def _export_needs_adapters(self) -> Recipe:
        if self.convert.adapters == "export" and self.finetune is None:
            raise ValueError(
                "convert.adapters is export but the recipe has no finetune section to train them"
            )
        return self


def _node_at(root: yaml.Node, loc: tuple[Any, ...]) -> tuple[yaml.Node, list[str], list[str]]:
    """Follow a pydantic error location through the YAML node tree: (deepest node found, the
    location parts found in the file, the parts not found)."""
    node, found = root, []
    rest = list(loc)
    while rest:
        part = rest[0]
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
            if child is None:
                break
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        found.append(str(part))
        rest.pop(0)
    return node, found, [str(p) for p in rest]


def _key_line(root: yaml.Node, found: list[str]) -> int | None:
    """Line of the key itself (not its value) for a mapping entry, 1-based."""
    node = root
    line = None
    for part in found:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
    return line


def describe_errors(path: Path, root: yaml.Node, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        node, found, missing = _node_at(root, tuple(err["loc"]))
        key = ".".join(found + (missing[-1:] if err["type"] == "missing" or not found else []))
        line = _key_line(root, found) or node.start_mark.line + 1
        lines.append(f"{path}:{line}: {key or '(recipe)'}: {err['msg']}")
    return "\n".join(lines)


def load_recipe(path: Path) -> Recipe:
    """Parse and validate a recipe; any problem raises RecipeError naming the key and the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecipeError(path, f"cannot read the recipe ({exc})") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict) or root is None:
        raise RecipeError(path, "a recipe is a YAML mapping with source, convert and bundle sections")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = describe_errors(path, root, exc)
        raise RecipeError(path, f"invalid recipe\n{problems}") from exc


def input_path(value: str | Path, recipe_path: Path) -> Path:
    """An input file named in a recipe: absolute, else beside the recipe, the cwd, then the repo."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    for base in (Path(recipe_path).resolve().parent, Path.cwd(), REPO):
        if (base / p).exists():
            return base / p
    return Path(recipe_path).resolve().parent / p


__all__ = [
    "BundleSection",
    "ConvertSection",
    "EvalSettings",
    "PublishSection",
    "Recipe",
    "RecipeVariant",
    "input_path",
    "load_recipe",
]
