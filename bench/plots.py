"""PNG plots of a comparison: decode speed against quality and against size (matplotlib, Agg).

One point per case (the first scenario that has decode figures), labelled with the case's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.report import rows
from edge_agent.contracts.bench_record import BenchRecord


def _points(records: Sequence[BenchRecord]) -> list[dict[str, object]]:
    seen: set[str] = set()
    out = []
    for r in rows(records):
        if r["error"] or r["decode_tok_s"] is None or r["case"] in seen:
            continue
        seen.add(str(r["case"]))
        out.append(r)
    return out


def _scatter(points: list[dict[str, object]], x: str, xlabel: str, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for p in points:
        if p[x] is None:
            continue
        ax.scatter(p[x], p["decode_tok_s"], s=40)
        ax.annotate(
            str(p["case"]), (p[x], p["decode_tok_s"]), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    ax.margins(x=0.15, y=0.12)  # room for the labels of the outermost points
    ax.set_xlabel(xlabel)
    ax.set_ylabel("decode tok/s (median)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(records: Sequence[BenchRecord], out_dir: Path) -> list[Path]:
    """speed_vs_quality.png (perplexity, lower is better) and speed_vs_size.png; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    points = _points(records)
    scenario = points[0]["scenario"] if points else ""
    return [
        _scatter(
            points,
            "perplexity",
            "perplexity (lower is better)",
            f"speed vs quality ({scenario})",
            out_dir / "speed_vs_quality.png",
        ),
        _scatter(
            points,
            "size_mb",
            "size on disk (MB)",
            f"speed vs size ({scenario})",
            out_dir / "speed_vs_size.png",
        ),
    ]


__all__ = ["write_plots"]
