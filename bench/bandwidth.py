"""Memory bandwidth of this machine, measured the plain way: large array copies with numpy.

A copy is memcpy underneath, so it is bound by the memory bus, not by arithmetic; each byte copied is
read once and written once, so bandwidth = 2 * bytes / time. The array (256 MB by default) is far
larger than any CPU cache. Threads split the array, as a decode step's threads split the weights.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edge_agent.bench_metrics import summarize
from edge_agent.contracts.bench_record import Summary


def measure_bandwidth(threads: int = 1, size_mb: int = 256, repeats: int = 5) -> Summary:
    """Copy bandwidth in GB/s (1e9 bytes/s), one sample per repeat after one warm-up copy."""
    src = np.ones(size_mb * (1 << 20) // 8)
    dst = np.empty_like(src)
    pairs = list(zip(np.array_split(src, threads), np.array_split(dst, threads), strict=True))
    samples = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i in range(repeats + 1):
            start = time.perf_counter()
            list(pool.map(lambda p: np.copyto(p[1], p[0]), pairs))
            elapsed = time.perf_counter() - start
            if i:  # the first copy also faults the destination pages in
                samples.append(2 * src.nbytes / elapsed / 1e9)
    return summarize(samples, "GB/s")


__all__ = ["measure_bandwidth"]
