"""Line charts drawn as SVG on the server: no chart library to vendor, nothing for the browser to fetch.

One chart per metric (their units differ), the releases along x in the order they were measured,
one line per variant; a gap where a variant was not measured on a release. Every point carries a
<title>, so hovering it shows the exact figure.
"""

from __future__ import annotations

import math
from html import escape

from build_side.fleet.dashboard.views import Series

W, H = 420, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 24, 44
COLOURS = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2")


def nice_max(value: float) -> float:
    """A round axis top at or above `value` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def line_chart(title: str, releases: list[str], series: list[Series]) -> str:
    """An <svg> element (a string of markup) for one metric."""
    t = escape(title)
    values = [p for s in series for p in s.points if p is not None]
    head = f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg">'
    parts = [head, f'<text x="{LEFT}" y="15" class="chart-title">{t}</text>']
    if not values:
        parts.append(
            f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="chart-empty">no records</text>'
        )
        return "".join([*parts, "</svg>"])
    top = nice_max(max(values))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    n = len(releases)

    def x(i: int) -> float:
        return LEFT + (pw / 2 if n == 1 else pw * i / (n - 1))

    def y(v: float) -> float:
        return TOP + ph * (1 - v / top)

    for k in range(5):  # grid and y labels
        v = top * k / 4
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">{_fmt(v)}</text>'
        )
    for i, rel in enumerate(releases):
        label = escape(rel.split("@")[-1] if "@" in rel else rel)
        parts.append(
            f'<text x="{x(i):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" class="tick">'
            f"<title>{escape(rel)}</title>{label}</text>"
        )
    for j, s in enumerate(series):
        colour = COLOURS[j % len(COLOURS)]
        runs: list[list[tuple[float, float]]] = [[]]
        for i, p in enumerate(s.points):
            if p is None:
                runs.append([])
            else:
                runs[-1].append((x(i), y(p)))
        for run in runs:
            if len(run) > 1:
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in run)
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, p in enumerate(s.points):
            if p is not None:
                tip = escape(f"{s.label} {releases[i]}: {_fmt(p)}")
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(p):.1f}" r="3.5" fill="{colour}"><title>{tip}</title></circle>'
                )
        lx = LEFT + j * 130
        parts.append(f'<rect x="{lx}" y="{H - 16}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 14}" y="{H - 7}" class="legend">{escape(s.label)}</text>')
    return "".join([*parts, "</svg>"])


__all__ = ["line_chart", "nice_max"]
