"""Fixtures of the build-side tests: the tiny model's converted variants, measured once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

EVAL_TOKENS = 256  # enough positions for stable figures on the tiny model, cheap on CI


@pytest.fixture(scope="session")
def tiny_convert_dir(tiny_variants: dict[str, Path]) -> Path:
    """The convert output behind `tiny_variants` (cpu-fp32, cpu-int4), with quality measured."""
    from build_side.quality import measure

    out = next(iter(tiny_variants.values())).parent
    measure(out, max_tokens=EVAL_TOKENS, window=128)
    return out
