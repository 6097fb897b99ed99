"""How a rollout splits a group into waves: a canary then growing batches, or cumulative percentages."""

from __future__ import annotations

import itertools
import math


def plan_waves(devices: list[str], canary: float, growth: float) -> list[list[str]]:
    """Split devices (in order) into waves: the canary, then batches growing by `growth`."""
    if not devices:
        return []
    n = len(devices)
    size = int(canary) if canary >= 1 else math.ceil(n * canary)
    size = min(max(size, 1), n)
    waves, i = [], 0
    while i < n:
        waves.append(devices[i : i + size])
        i += size
        size = max(size + 1, math.ceil(size * growth))
    return waves


def plan_percent_waves(devices: list[str], percents: list[float]) -> list[list[str]]:
    """Waves that reach these cumulative shares of the devices: `[1, 10, 50, 100]` is 1%, then up to
    10%, 50% and all. Each share gets a wave of at least one device while devices remain (over 10
    devices: 1, 1, 3 and 5), so a small group still goes through every stage the operator asked for."""
    check_percents(percents)
    waves, done = [], 0
    for p in percents:
        upto = min(max(math.ceil(len(devices) * p / 100), done + 1), len(devices))
        if upto > done:
            waves.append(devices[done:upto])
            done = upto
    return waves


def check_percents(percents: list[float]) -> list[float]:
    """Cumulative percentages must rise strictly, stay in (0, 100], and end at 100 (every device)."""
    if not percents:
        raise ValueError("waves: give at least one percentage, ending at 100")
    if any(not 0 < p <= 100 for p in percents):
        raise ValueError(f"waves: every percentage must be above 0 and at most 100, got {percents}")
    if any(b <= a for a, b in itertools.pairwise(percents)):
        raise ValueError(f"waves: cumulative percentages must rise, got {percents}")
    if percents[-1] != 100:
        raise ValueError(f"waves: the last wave must reach 100% of the group, got {percents}")
    return percents


__all__ = ["check_percents", "plan_percent_waves", "plan_waves"]
