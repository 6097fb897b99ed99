"""`bench history`: runs of the same case compared in time order, regressions flagged."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

from bench.history import append_records, history, load_records
from edge_agent.contracts.bench_record import BenchRecord, Summary
from tests.bench.conftest import CompareRun
from tests.conftest import cli


def slower(record: BenchRecord, factor: float, later: timedelta) -> BenchRecord:
    """The same case measured again later, with decode `factor` times as fast."""
    decode = record.metrics["decode_tok_s"]
    metrics = dict(record.metrics)
    metrics["decode_tok_s"] = Summary(
        unit=decode.unit,
        median=decode.median * factor,
        p90=decode.p90 * factor,
        stddev=decode.stddev * factor,
        samples=[s * factor for s in decode.samples],
    )
    return record.model_copy(update={"time": record.time + later, "metrics": metrics})


def test_regression_is_flagged_and_noise_is_not(compare_run: CompareRun, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    first = [r for r in compare_run.records if r.scenario == "pp16-tg8"]
    append_records(results, first)
    int4 = next(r for r in first if r.variant == "cpu-int4")
    fp32 = next(r for r in first if r.variant == "cpu-fp32")
    append_records(results, [slower(int4, 0.7, timedelta(hours=1)), slower(fp32, 0.97, timedelta(hours=1))])

    entries = history(load_records(results), threshold=0.10)
    latest = {(e.record.variant, e.record.time): e for e in entries}
    flagged = latest[("cpu-int4", int4.time + timedelta(hours=1))]
    assert [c.metric for c in flagged.regressions] == ["decode_tok_s"]
    assert abs(flagged.regressions[0].change + 0.3) < 1e-9
    assert not latest[("cpu-fp32", fp32.time + timedelta(hours=1))].regressions  # -3% is within 10%
    assert latest[("cpu-int4", int4.time)].previous is None  # the first run has nothing to compare with

    proc = subprocess.run(
        cli("bench", "history", "--results", str(results), "--fail-on-regression"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "REGRESSION: decode_tok_s -30%" in proc.stdout
    doc = json.loads(subprocess.run(
        cli("bench", "history", "--results", str(results), "--json"), capture_output=True, text=True, check=True
    ).stdout)  # fmt: skip
    assert sum(1 for e in doc if e["regressions"] == ["decode_tok_s"]) == 1


def test_no_regression_exits_zero(compare_run: CompareRun, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    append_records(results, compare_run.records)
    proc = subprocess.run(
        cli("bench", "history", "--results", str(results), "--fail-on-regression"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cpu-int4" in proc.stdout and "REGRESSION" not in proc.stdout
