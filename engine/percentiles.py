"""Percentiles from a log-bucketed histogram: bounded memory, mergeable, stored as JSON.

A duration lands in bucket ``i`` when it is at most ``BOUNDS[i]`` and above
``BOUNDS[i - 1]``; the bounds grow by 25% from 0.1 ms to a day (94 of them),
so a percentile read back is the upper bound of the bucket that holds the
true value: never low, at most 25% high. A histogram is a sparse mapping
bucket -> count, so one holds a few entries for a steady workload and at most
``len(BOUNDS)`` for any: it adds and merges by summing counts, which is what
lets many workers fold their events into one stored value (engine.events.stats).

Hand-written rather than a sketch library (DDSketch, HdrHistogram): the
value must round-trip through the statistics bucket as plain JSON and merge
under compare-and-set, and these forty lines are the whole of it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping

BASE_MS = 0.1
GROWTH = 1.25
BOUNDS: tuple[float, ...] = tuple(
    BASE_MS * GROWTH**i for i in range(math.ceil(math.log(86_400_000 / BASE_MS, GROWTH)) + 1)
)

Histogram = dict[int, int]  # bucket index -> count


def bucket(value_ms: float) -> int:
    """The index of the bucket a duration falls in (the last one holds everything longer)."""
    return min(bisect.bisect_left(BOUNDS, max(value_ms, 0.0)), len(BOUNDS) - 1)


def add(histogram: Histogram, value_ms: float) -> None:
    index = bucket(value_ms)
    histogram[index] = histogram.get(index, 0) + 1


def merged(histograms: Iterable[Mapping[int, int]]) -> Histogram:
    total: Histogram = {}
    for histogram in histograms:
        for index, count in histogram.items():
            total[index] = total.get(index, 0) + count
    return total


def quantile(histogram: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank, as its bucket's upper bound; None if empty."""
    count = sum(histogram.values())
    if not count:
        return None
    rank = max(1, math.ceil(q / 100 * count))
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return BOUNDS[index]
    return BOUNDS[max(histogram)]
