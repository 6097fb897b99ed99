"""Runs the onnxruntime-genai model builder for several variants in one child process.

`build_side.convert` starts it as `python -m build_side.builder_worker JOB.json`. One process pays the
builder's imports (torch, transformers, onnx_ir) once for all variants, and keeps its prints, tqdm bars
and native log lines out of the user's terminal: the parent reads them into a log file and turns the
few it understands into one progress bar per variant. Lines starting with `@@slmops ` are this
worker's own events (JSON).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

EVENT_PREFIX = "@@slmops "


def emit(**event: object) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    for item in job["variants"]:
        emit(event="start", id=item["id"])
        try:
            args = (None, job["input"], item["output"], item["precision"], item["ep"], job["cache"])
            options = parse_extra_options(*args, item["extra_options"])
            create_model(*args, **options)
        except Exception as exc:  # the builder raises bare Exception/ValueError/...: report, then stop
            traceback.print_exc()
            emit(event="error", id=item["id"], message=f"{type(exc).__name__}: {exc}")
            return 1
        emit(event="done", id=item["id"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
