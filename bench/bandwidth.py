"""Memory read bandwidth of this machine, measured the plain way: reductions over a large array.

Decode streams weights from memory and writes almost nothing, so the figure that bounds it is read
bandwidth. `np.max` over uint64 is vectorised and does one compare per 8 bytes, so it is bound by the
memory bus, not by arithmetic (a copy would also pay for the writes). The array (256 MB by default)
is far larger than any CPU cache; threads split it, as a decode step's threads split the weights.
On a shared machine the samples vary with the neighbours' load, so the bound uses the best sample:
the ceiling is what the bus delivered when it was least contended.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edge_agent.bench_metrics import summarize
from edge_agent.contracts.bench_record import Summary


def measure_bandwidth(threads: int = 1, size_mb: int = 256, repeats: int = 5) -> Summary:
    """Read bandwidth in GB/s (1e9 bytes/s), one sample per repeat after one warm-up pass."""
    data = np.ones(size_mb * (1 << 20) // 8, dtype=np.uint64)
    parts = np.array_split(data, max(1, threads))
    samples = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i in range(repeats + 1):
            start = time.perf_counter()
            list(pool.map(np.max, parts))
            elapsed = time.perf_counter() - start
            if i:  # the first pass also faults the pages in
                samples.append(data.nbytes / elapsed / 1e9)
    return summarize(samples, "GB/s")


def best(bandwidth: Summary) -> float:
    """The sample the decode bound uses, in bytes/s."""
    return max(bandwidth.samples) * 1e9


__all__ = ["best", "measure_bandwidth"]
