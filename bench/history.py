"""The results file (JSONL of BenchRecord, appended by every run) and regressions between runs.

Two records are comparable when they measured the same thing on the same host: model, variant,
engine, provider, scenario and thread count. Each run is compared with the previous comparable one;
a metric that got worse by more than the threshold is a regression.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from pydantic import ValidationError

from edge_agent.bench_metrics import DIRECTION, relative_change
from edge_agent.bundle_check import describe_validation_error
from edge_agent.contracts.bench_record import BenchRecord
from edge_agent.errors import ContractError

# Metrics watched for regressions (medians of speed metrics; the rest are single figures).
WATCHED = [
    "decode_tok_s",
    "prefill_tok_s",
    "ttft_ms",
    "tpot_ms",
    "e2e_tok_s",
    "latency_ms",
    "throughput_tok_s",
    "peak_rss_mb",
    "perplexity",
    "top1_agreement",
]


def default_results_path() -> Path:
    home = Path(os.environ.get("SLMOPS_HOME") or platformdirs.user_data_dir("slmops"))
    return home / "bench" / "results.jsonl"


def append_records(path: Path, records: Sequence[BenchRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for r in records:
            fh.write(r.model_dump_json(by_alias=True) + "\n")


def load_records(path: Path) -> list[BenchRecord]:
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(BenchRecord.model_validate_json(line))
        except ValidationError as exc:
            raise ContractError(f"{path}:{n}", describe_validation_error(exc)) from exc
    return out


def key(r: BenchRecord) -> tuple:
    return (r.model, r.variant, r.engine, r.provider, r.scenario, r.meta.threads, r.meta.host)


def figure(r: BenchRecord, metric: str) -> float | None:
    if metric in r.metrics:
        return r.metrics[metric].median
    if metric == "peak_rss_mb":
        return r.peak_rss_mb
    if metric == "load_time_s":
        return r.load_time_s
    if r.quality is not None and metric in ("perplexity", "kl_divergence", "top1_agreement"):
        return getattr(r.quality, metric)
    return None


@dataclass
class Change:
    metric: str
    old: float
    new: float
    change: float  # signed improvement: negative is worse


@dataclass
class HistoryEntry:
    record: BenchRecord
    previous: BenchRecord | None
    changes: list[Change] = field(default_factory=list)
    regressions: list[Change] = field(default_factory=list)


def compare_runs(new: BenchRecord, old: BenchRecord, threshold: float) -> tuple[list[Change], list[Change]]:
    changes = []
    for metric in WATCHED:
        a, b = figure(old, metric), figure(new, metric)
        if a is None or b is None:
            continue
        changes.append(Change(metric, a, b, relative_change(b, a, DIRECTION[metric])))
    return changes, [c for c in changes if c.change < -threshold]


def history(records: Sequence[BenchRecord], threshold: float = 0.10) -> list[HistoryEntry]:
    """Every successful record in time order, each compared with the previous comparable one."""
    by_key: dict[tuple, list[BenchRecord]] = defaultdict(list)
    for r in sorted((r for r in records if not r.error), key=lambda r: r.time):
        by_key[key(r)].append(r)
    out = []
    for runs in by_key.values():
        previous = None
        for r in runs:
            entry = HistoryEntry(r, previous)
            if previous is not None:
                entry.changes, entry.regressions = compare_runs(r, previous, threshold)
            out.append(entry)
            previous = r
    out.sort(key=lambda e: (key(e.record), e.record.time))
    return out


__all__ = [
    "WATCHED",
    "Change",
    "HistoryEntry",
    "append_records",
    "compare_runs",
    "default_results_path",
    "history",
    "load_records",
]
