"""Percentiles, per-interval rates and Prometheus histogram arithmetic for the benchmarks."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50, p95, p99 and max of a sample (same unit as the values)."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def per_interval(times: Iterable[float], start: float, interval: float = 1.0) -> list[int]:
    """How many of `times` (seconds) fall in each `interval` from `start`."""
    counts: dict[int, int] = defaultdict(int)
    for moment in times:
        if moment >= start:
            counts[int((moment - start) // interval)] += 1
    if not counts:
        return []
    return [counts.get(i, 0) for i in range(max(counts) + 1)]


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition as {metric sample name: {labels: value}}."""
    samples: Samples = defaultdict(dict)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, raw_labels, value = match.groups()
        labels = tuple(sorted(_LABEL.findall(raw_labels or "")))
        try:
            samples[name][labels] = float(value)
        except ValueError:
            continue
    return dict(samples)


def difference(after: Samples, before: Samples) -> Samples:
    """Counter and histogram growth between two scrapes of the same process."""
    grown: Samples = {}
    for name, series in after.items():
        earlier = before.get(name, {})
        grown[name] = {labels: value - earlier.get(labels, 0.0) for labels, value in series.items()}
    return grown


def combine(scrapes: Sequence[Samples]) -> Samples:
    """The sum of several processes' samples (replicas of one service)."""
    total: Samples = defaultdict(dict)
    for scrape in scrapes:
        for name, series in scrape.items():
            for labels, value in series.items():
                total[name][labels] = total[name].get(labels, 0.0) + value
    return dict(total)


@dataclass(frozen=True)
class HistogramView:
    """One histogram series (summed over the labels not selected) as buckets, sum and count."""

    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending
    total: float
    count: float

    @property
    def mean(self) -> float:
        """Mean observation, NaN when empty."""
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Estimated q-quantile (0-1) by linear interpolation inside the bucket, as PromQL does."""
        if not self.count:
            return math.nan
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower_bound
                share = (rank - lower_count) / (cumulative - lower_count or 1)
                return lower_bound + (bound - lower_bound) * share
            lower_bound, lower_count = bound, cumulative
        return lower_bound

    def as_json(self) -> dict[str, object]:
        """Count, sum, mean and estimated p50/p95/p99 in seconds, plus the raw buckets."""
        return {
            "count": self.count,
            "sum_seconds": self.total,
            "mean_seconds": self.mean,
            "p50_seconds": self.quantile(0.5),
            "p95_seconds": self.quantile(0.95),
            "p99_seconds": self.quantile(0.99),
            "buckets": [[("+Inf" if math.isinf(b) else b), c] for b, c in self.buckets],
        }


def histogram(samples: Samples, name: str, **match: str) -> HistogramView:
    """The histogram `name` restricted to series whose labels include `match`."""

    def selected(labels: Labels) -> bool:
        present = dict(labels)
        return all(present.get(k) == v for k, v in match.items())

    buckets: dict[float, float] = defaultdict(float)
    for labels, value in samples.get(f"{name}_bucket", {}).items():
        if selected(labels):
            bound = dict(labels)["le"]
            buckets[math.inf if bound == "+Inf" else float(bound)] += value
    total = sum(v for k, v in samples.get(f"{name}_sum", {}).items() if selected(k))
    count = sum(v for k, v in samples.get(f"{name}_count", {}).items() if selected(k))
    return HistogramView(sorted(buckets.items()), total, count)


def counter(samples: Samples, name: str, **match: str) -> float:
    """The sum of a counter's series whose labels include `match`."""
    series = samples.get(name, {})
    return sum(v for k, v in series.items() if all(dict(k).get(a) == b for a, b in match.items()))
