"""Fixtures of the hot-path benchmarks: the suite's own tiny model and bundle fixtures, reused.

Run: `.venv/bin/python -m pytest bench/benchmarks --benchmark-only` (not part of the test suite:
testpaths is tests/). SLMOPS_BENCH_VARIANT=/path/to/onnx-variant measures a real variant instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import (  # noqa: F401  (fixtures, registered by import)
    _isolated_home,
    keys_dir,
    make_bundle,
    signing_key,
    smollm2_gguf,
    tiny_model_dir,
    tiny_variants,
)


@pytest.fixture(scope="session")
def variant_dir(request: pytest.FixtureRequest) -> Path:
    env = os.environ.get("SLMOPS_BENCH_VARIANT")
    return Path(env) if env else request.getfixturevalue("tiny_variants")["cpu-int4"]
