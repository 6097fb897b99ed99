"""Present records: a rich table, JSON, CSV and Markdown. Nothing here measures anything.

Rows are flat dicts built once (`rows`), so every format shows the same figures.

"x base" is decode speed relative to a baseline case, paired by repetition: with interleaved runs,
repetition k of every case ran back to back, so dividing within each repetition cancels most of a
host's drift, which single medians taken minutes apart do not.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence

from rich.table import Table

from edge_agent.bench_metrics import fraction_of_bound
from edge_agent.contracts.bench_record import BenchRecord

SPEED_METRICS = ["ttft_ms", "prefill_tok_s", "decode_tok_s", "tpot_ms", "e2e_tok_s"]

# (row key, header, format) in table order.
COLUMNS: list[tuple[str, str, str]] = [
    ("case", "case", "{}"),
    ("scenario", "scenario", "{}"),
    ("size_mb", "size MB", "{:.0f}"),
    ("load_time_s", "load s", "{:.2f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("ttft_ms", "TTFT ms", "{:.1f}"),
    ("prefill_tok_s", "prefill tok/s", "{:.0f}"),
    ("decode_tok_s", "decode tok/s", "{:.1f}"),
    ("decode_x_base", "x base", "{:.2f}"),
    ("tpot_ms", "TPOT ms", "{:.2f}"),
    ("e2e_tok_s", "e2e tok/s", "{:.1f}"),
    ("decode_bound_tok_s", "bound tok/s", "{:.0f}"),
    ("bound_fraction", "% bound", "{:.0%}"),
    ("perplexity", "ppl", "{:.2f}"),
    ("kl_divergence", "KL", "{:.4f}"),
    ("top1_agreement", "top-1", "{:.1%}"),
]


def record_label(r: BenchRecord, with_provider: bool = False, with_threads: bool = False) -> str:
    parts = [r.variant if r.engine == "onnxruntime-genai" else f"{r.engine}:{r.variant}"]
    if with_provider:
        parts.append(r.provider.removesuffix("ExecutionProvider"))
    if with_threads and r.meta.threads:
        parts.append(f"t{r.meta.threads}")
    return "/".join(parts)


def labels(records: Sequence[BenchRecord]) -> list[str]:
    vary_p = len({r.provider for r in records}) > 1
    vary_t = len({r.meta.threads for r in records}) > 1
    return [record_label(r, vary_p, vary_t) for r in records]


def row(r: BenchRecord, label: str) -> dict[str, object]:
    out: dict[str, object] = {
        "case": label,
        "model": r.model,
        "variant": r.variant,
        "engine": r.engine,
        "provider": r.provider,
        "threads": r.meta.threads,
        "scenario": r.scenario,
        "size_mb": r.size_bytes / 1e6 if r.size_bytes is not None else None,
        "load_time_s": r.load_time_s,
        "peak_rss_mb": r.peak_rss_mb,
        "decode_bound_tok_s": r.decode_bound_tok_s,
        "error": r.error,
    }
    for key in SPEED_METRICS:
        s = r.metrics.get(key)
        out[key] = s.median if s else None
        out[f"{key}_p90"] = s.p90 if s else None
        out[f"{key}_stddev"] = s.stddev if s else None
    decode = r.metrics.get("decode_tok_s")
    out["bound_fraction"] = fraction_of_bound(decode.median if decode else None, r.decode_bound_tok_s)
    q = r.quality
    out["perplexity"] = q.perplexity if q else None
    out["kl_divergence"] = q.kl_divergence if q else None
    out["top1_agreement"] = q.top1_agreement if q else None
    out["reference"] = q.reference if q else None
    return out


def paired_speedups(
    records: Sequence[BenchRecord], names: Sequence[str], baseline: str | None
) -> dict[tuple[str, str], float]:
    """(case, scenario) -> median over repetitions of its decode tok/s / the baseline's in the same
    repetition. Baseline: a case label, default the first case (the quality reference)."""
    base_name = baseline or (names[0] if names else None)
    base = {
        r.scenario: r.metrics["decode_tok_s"].samples
        for r, n in zip(records, names, strict=True)
        if n == base_name and "decode_tok_s" in r.metrics
    }
    out: dict[tuple[str, str], float] = {}
    for r, name in zip(records, names, strict=True):
        s, b = r.metrics.get("decode_tok_s"), base.get(r.scenario)
        if s and b and len(s.samples) == len(b) and all(b):
            out[(name, r.scenario)] = statistics.median(x / y for x, y in zip(s.samples, b, strict=True))
    return out


def rows(records: Sequence[BenchRecord], baseline: str | None = None) -> list[dict[str, object]]:
    names = labels(records)
    speedups = paired_speedups(records, names, baseline)
    out = []
    for r, name in zip(records, names, strict=True):
        data = row(r, name)
        data["decode_x_base"] = speedups.get((name, r.scenario))
        out.append(data)
    return out


def fmt(value: object, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def cells(r: dict[str, object]) -> list[str]:
    """Formatted cells of one row; decode speed carries its stddev (the figure people compare)."""
    out = [fmt(r[key], spec) for key, _, spec in COLUMNS]
    if r["decode_tok_s"] is not None and r["decode_tok_s_stddev"] is not None:
        i = [k for k, _, _ in COLUMNS].index("decode_tok_s")
        out[i] = f"{r['decode_tok_s']:.1f} ±{r['decode_tok_s_stddev']:.1f}"
    return out


def bandwidth_note(records: Sequence[BenchRecord]) -> str | None:
    """One line naming the bandwidth the decode bounds were computed from."""
    bests = [
        max(r.metrics["mem_bandwidth_gb_s"].samples) for r in records if "mem_bandwidth_gb_s" in r.metrics
    ]
    if not bests:
        return None
    span = f"{min(bests):.1f} GB/s" if min(bests) == max(bests) else f"{min(bests):.1f}-{max(bests):.1f} GB/s"
    return (
        f"decode bound = memory read bandwidth (best numpy pass over 256 MB, sampled during the run: "
        f"{span}) / weight bytes read per token"
    )


def table(records: Sequence[BenchRecord], title: str = "bench compare", baseline: str | None = None) -> Table:
    t = Table(title=title, caption=bandwidth_note(records))
    for _, header, _ in COLUMNS:
        t.add_column(header, justify="left" if header in ("case", "scenario") else "right")
    for r in rows(records, baseline):
        if r["error"]:
            t.add_row(str(r["case"]), str(r["scenario"]), f"[red]error: {str(r['error'])[:80]}[/red]")
            continue
        t.add_row(*cells(r))
    return t


def to_json(records: Sequence[BenchRecord]) -> str:
    return json.dumps([r.model_dump(mode="json", by_alias=True) for r in records], indent=2)


def to_csv(records: Sequence[BenchRecord], baseline: str | None = None) -> str:
    data = rows(records, baseline)
    buf = io.StringIO()
    if data:
        writer = csv.DictWriter(buf, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    return buf.getvalue()


def to_markdown(records: Sequence[BenchRecord], baseline: str | None = None) -> str:
    lines = [
        "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "| " + " | ".join("---" if k in ("case", "scenario") else "---:" for k, _, _ in COLUMNS) + " |",
    ]
    for r in rows(records, baseline):
        if r["error"]:
            line = [str(r["case"]), str(r["scenario"]), f"error: {r['error']}"] + [""] * (len(COLUMNS) - 3)
        else:
            line = cells(r)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |")
    note = bandwidth_note(records)
    return "\n".join(lines) + (f"\n\n{note}\n" if note else "\n")


def render(records: Sequence[BenchRecord], fmt_name: str, baseline: str | None = None) -> str:
    """json, csv or md as text (the table format is printed by the CLI with rich). JSON is the records
    themselves (raw samples included), so it has no derived columns."""
    if fmt_name == "json":
        return to_json(records)
    return {"csv": to_csv, "md": to_markdown}[fmt_name](records, baseline)


__all__ = ["COLUMNS", "labels", "record_label", "render", "rows", "table", "to_csv", "to_json", "to_markdown"]
