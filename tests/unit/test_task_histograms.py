"""The task histograms count like Prometheus histograms: a bucket holds every value at most
its bound, +Inf holds all, the sum is the values' sum; exemplars ride on their bucket."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.core import HistogramMetricFamily

from conveyor.observability.task_metrics import DURATION_BUCKETS, Buckets

values = st.lists(st.floats(min_value=0, max_value=10_000, allow_nan=False), max_size=200)


def cumulative(buckets: Buckets) -> dict[str, float]:
    family = HistogramMetricFamily("h", "h", labels=["queue"])
    buckets.add_to(family, "q")
    return {s.labels["le"]: s.value for s in family.samples if s.name == "h_bucket"}


@given(values)
def test_each_bucket_counts_the_values_at_most_its_bound(observed: list[float]) -> None:
    buckets = Buckets(DURATION_BUCKETS)
    for value in observed:
        buckets.observe(value, None)
    found = cumulative(buckets)
    for bound in DURATION_BUCKETS:
        assert found[repr(float(bound))] == sum(1 for v in observed if v <= bound)
    assert found["+Inf"] == len(observed)
    assert math.isclose(buckets.total, sum(observed), abs_tol=1e-6)


def test_an_exemplar_rides_on_the_bucket_of_its_value() -> None:
    buckets = Buckets((0.1, 1.0))
    buckets.observe(0.5, {"trace_id": "ab" * 16})
    buckets.observe(5.0, None)
    family = HistogramMetricFamily("h", "h", labels=["queue"])
    buckets.add_to(family, "q")
    by_le = {s.labels["le"]: s for s in family.samples if s.name == "h_bucket"}
    assert by_le["0.1"].exemplar is None
    assert by_le["1.0"].exemplar is not None
    assert by_le["1.0"].exemplar.labels == {"trace_id": "ab" * 16}
    assert by_le["1.0"].exemplar.value == 0.5
    assert by_le["+Inf"].value == 2 and by_le["+Inf"].exemplar is None
