"""Reconnect delays: exponential between two bounds, with jitter, so a fleet does not reconnect in step.

Attempt n (0 for the first) waits a delay drawn uniformly from [bound/2, bound], bound =
min(max_s, min_s * 2**n) ("equal jitter"): it never waits longer than `max_s`, and devices that lost
the broker together spread their returns over half of each window.
"""

from __future__ import annotations

import random


def reconnect_delay(attempt: int, min_s: float, max_s: float, rng: random.Random | None = None) -> float:
    bound = min(max_s, min_s * 2 ** min(attempt, 32))
    return (rng or random).uniform(bound / 2, bound)


__all__ = ["reconnect_delay"]
