"""Fine-tuning: LoRA, QLoRA or full; several adapters on one base; ONNX Runtime adapter export.

The public face of the stage; the modules behind it are implementation:
    config            typed settings of one run
    data              records -> prompt/answer -> tokens; split; errors with file, line and field
    trainer           the training loop (`finetune`), checkpoints and resume
    evaluate          loss, perplexity, accuracy / exact match
    search            random search over learning rate, rank and batch size
    recipe            a recipe's finetune section -> runs (`run_from_recipe`)
    export_adapters   one ONNX base with LoRA inputs + one .onnx_adapter per adapter
"""

from build_side.finetune.config import (
    DataSettings,
    EvalSettings,
    FinetuneConfig,
    LoraSettings,
    PromptTemplate,
    TrainSettings,
)
from build_side.finetune.data import Example, Record, load_examples, load_records, render, split_records
from build_side.finetune.recipe import configs_from_section, run_from_recipe
from build_side.finetune.search import SearchSpace, Trial, search
from build_side.finetune.trainer import RunResult, finetune, score

__all__ = [
    "DataSettings",
    "EvalSettings",
    "Example",
    "FinetuneConfig",
    "LoraSettings",
    "PromptTemplate",
    "Record",
    "RunResult",
    "SearchSpace",
    "TrainSettings",
    "Trial",
    "configs_from_section",
    "finetune",
    "load_examples",
    "load_records",
    "render",
    "run_from_recipe",
    "score",
    "search",
    "split_records",
]
