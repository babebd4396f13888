"""Prometheus text as the benchmarks read it: samples, sums, histograms, quantiles.

:func:`http_get` fetches ``/metrics`` (or any probe) of a service on 127.0.0.1;
:func:`parse_metrics` turns the text into samples; :func:`histogram_quantile`
interpolates like PromQL's function of that name.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""(sample name, sorted labels) -> value."""


def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """(status, body) of ``http://127.0.0.1:<port><path>``; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


def parse_metrics(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def metric_by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == name:
            key = dict(ls).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def histogram(samples: Samples, name: str) -> list[tuple[float, float]]:
    """(le, cumulative count) buckets of histogram ``name``, +Inf last."""
    buckets = [
        (float(dict(ls)["le"]), v) for (n, ls), v in samples.items() if n == name + "_bucket"
    ]
    return sorted(buckets)


def subtract_buckets(after: Sequence[tuple[float, float]],
                     before: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    prior = dict(before)
    return [(le, count - prior.get(le, 0.0)) for le, count in after]


def add_buckets(*histograms: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    total: dict[float, float] = {}
    for h in histograms:
        for le, count in h:
            total[le] = total.get(le, 0.0) + count
    return sorted(total.items())


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL ``histogram_quantile``: linear interpolation inside the bucket holding rank q."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # Prometheus answers the highest finite bound
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return math.nan


def quantile(values: Iterable[float], q: float) -> float:
    """The value at rank ``q`` of ``values`` (no interpolation); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
