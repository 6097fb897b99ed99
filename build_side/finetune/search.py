"""`--search N`: random search over learning rate (log scale), LoRA rank and batch size.

Each trial is a full run in `out/trials/trial-NN/` judged by its best validation loss alone (no
generation), so trials stay cheap; the winner is then scored before and after like a plain run.
LoRA's alpha moves with the rank (alpha/r stays as configured), so a rank does not also change the
effective learning rate.
Random search rather than a grid: with few trials it covers each axis at more distinct values.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from build_side.finetune.config import FinetuneConfig
from build_side.finetune.trainer import RunResult, finetune, score


@dataclass(frozen=True)
class SearchSpace:
    lr: tuple[float, float] = (3e-5, 3e-3)  # sampled uniformly in log space
    ranks: tuple[int, ...] = (4, 8, 16, 32)
    batch_sizes: tuple[int, ...] = (4, 8, 16)


@dataclass
class Trial:
    number: int
    lr: float
    r: int
    batch_size: int
    result: RunResult

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "lr": float(f"{self.lr:.3g}"),
            "r": self.r,
            "batch_size": self.batch_size,
            "steps": self.result.steps,
            "best_val_loss": self.result.best_val_loss,
            "stopped_early": self.result.stopped_early,
            "seconds": self.result.seconds,
        }


def sample(space: SearchSpace, rng: random.Random) -> tuple[float, int, int]:
    lo, hi = math.log(space.lr[0]), math.log(space.lr[1])
    return math.exp(rng.uniform(lo, hi)), rng.choice(space.ranks), rng.choice(space.batch_sizes)


def _trial_config(config: FinetuneConfig, lr: float, r: int, batch_size: int) -> FinetuneConfig:
    return config.model_copy(
        deep=True,
        update={
            "train": config.train.model_copy(update={"lr": lr, "batch_size": batch_size}),
            "lora": config.lora.model_copy(update={"r": r, "alpha": config.lora.alpha * r / config.lora.r}),
        },
    )


def search(
    config: FinetuneConfig,
    base_dir: Path,
    out_dir: Path,
    trials: int,
    *,
    space: SearchSpace | None = None,
    progress: bool = True,
) -> tuple[list[Trial], Trial]:
    """Run `trials` random trials; the best (by validation loss) gets scored before and after."""
    space = space or SearchSpace()
    rng = random.Random(config.train.seed)
    done: list[Trial] = []
    for number in range(1, trials + 1):
        lr, r, batch_size = sample(space, rng)
        trial_config = _trial_config(config, lr, r, batch_size)
        trial_config.eval.before = False
        folder = Path(out_dir) / "trials" / f"trial-{number:02d}"
        shutil.rmtree(folder, ignore_errors=True)
        result = finetune(trial_config, base_dir, folder, evaluate_after=False, progress=progress)
        done.append(Trial(number, lr, r, batch_size, result))
    best = min(done, key=lambda t: t.result.best_val_loss)
    best_config = _trial_config(config, best.lr, best.r, best.batch_size)
    before, after = score(best_config, base_dir, best.result.artifact)
    best.result.before, best.result.after = before, after
    winner = Path(out_dir) / best.result.artifact.name  # out/adapter (or out/model): the best trial's
    shutil.rmtree(winner, ignore_errors=True)
    shutil.copytree(best.result.artifact, winner)
    summary = {
        "config": config.model_dump(mode="json"),
        "space": asdict(space),
        "trials": [t.row() for t in done],
        "best": {**best.row(), "artifact": str(winner), "before": before, "after": after},
    }
    (Path(out_dir) / "search.json").write_text(json.dumps(summary, indent=2))
    return done, best
