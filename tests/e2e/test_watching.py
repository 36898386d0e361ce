"""What a user watches the hog with (issue 26), over one climb to the kill: `kubectl top pod` while it grows, then
Headlamp's pages of the kill in a real browser (docs/watching.md).

`kubectl top` is the release's own kubectl against metrics-server v0.8.0, registered through the API aggregation
layer (tests/e2e/metrics_server.py); Headlamp v0.45.0 runs in the cluster (tests/e2e/headlamp.py), deployed while
the hog climbs, and is read once the restarted container has its first figure.

What `kubectl top` prints is the working set the kubelet sampled (cAdvisor, every 10 to 20 s) when metrics-server
last scraped it (every METRIC_RESOLUTION_S): a figure up to half a minute old, and the API says of which moment
(PodMetrics' `timestamp`). Each reading is paired with the hog's own `working_set_mib` at that moment, from the
step lines of its log (the runtime's timestamps, as `kubectl logs --timestamps` shows them), and held to it within
one increment: the sample may fall inside a step's allocation. Readings rise as the hog grows, stay below the
limit, and after the kill the restarted container reads small again.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Iterator

import pytest

from tests import browser
from tests.e2e import headlamp
from tests.e2e.support import fact
from tests.e2e.watching import (
    INCREMENT_MIB,
    INTERVAL_MS,
    LAG_BOUND_S,
    RISING_SAMPLES,
    Climb,
    Reading,
    Step,
    Watched,
)
from tests.support import require

pytestmark = pytest.mark.e2e

# Two samples at least a step interval and this much apart lie in different steps: the API's second, and the step's
# own allocation.
STEP_APART_MARGIN_S = 2


@pytest.fixture(scope="module")
def watched(climb: Climb) -> Iterator[Watched]:
    """The climb run beside the modules before this one (conftest.py), or started now where they did not run; its
    namespaces and metrics-server go at the end of this module."""
    try:
        yield climb.wait()
    finally:
        climb.close()


def hog_figures_at(steps: list[Step], sampled_at: datetime.datetime) -> list[int]:
    """The hog's working set in effect at a sample the API times to the second (so in [t, t+1 s)): the last step
    logged by t, and any logged within the second after. Before its first step: none (0)."""
    second = datetime.timedelta(seconds=1)
    before = [step.working_set_mib for step in steps if step.at <= sampled_at]
    within = [step.working_set_mib for step in steps if sampled_at < step.at <= sampled_at + second]
    return (before[-1:] or [0]) + within


def assert_matches_the_hog(reading: Reading, steps: list[Step]) -> tuple[int, int]:
    """The reading within one increment of the hog's own figure at its sample's moment; returns that figure and how
    far the reading lay from the nearest of the figures in effect then (0 when it equals one)."""
    assert reading.sampled_at is not None
    figures = hog_figures_at(steps, reading.sampled_at)
    low, high = min(figures) - INCREMENT_MIB, max(figures) + INCREMENT_MIB
    assert low <= reading.mib <= high, (
        f"kubectl top read {reading.mib}Mi of the sample at {reading.sampled_at}; the hog's working set then was "
        f"{figures} MiB (one increment, {INCREMENT_MIB} MiB, either way allowed)"
    )
    return max(figures), min(abs(reading.mib - figure) for figure in figures)


@pytest.mark.timeout(600)
def test_kubectl_top_follows_the_hog_s_working_set(watched: Watched) -> None:
    readings, pod, restarted_at, limit_mib = watched.readings, watched.pod, watched.restarted_at, watched.limit_mib
    (first_start, first_steps), (second_start, second_steps) = watched.first, watched.second
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1, status
    assert status["lastState"]["terminated"]["reason"] == "OOMKilled", status

    for start in (first_start, second_start):  # the hog runs with the settings the bounds are stated from
        assert (start["increment_mib"], start["interval_ms"]) == (str(INCREMENT_MIB), str(INTERVAL_MS)), start
        assert start["limit_mib"] == str(limit_mib), start
    paired = [r for r in readings if r.sampled_at is not None]
    # The API times a sample to the second, the container's start too: a sample in the restart's own second could be
    # either container's, and is left out.
    before_kill = [r for r in paired if r.sampled_at and r.sampled_at < restarted_at]
    after_restart = [r for r in paired if r.sampled_at and r.sampled_at > restarted_at]
    assert after_restart, f"no reading of the restarted container: {readings}"

    # Each reading is the hog's figure at its sample's moment, and no older than the pipeline allows.
    matched = [assert_matches_the_hog(r, first_steps) for r in before_kill]
    matched += [assert_matches_the_hog(r, second_steps) for r in after_restart]
    figures, gaps = [figure for figure, _ in matched], [gap for _, gap in matched]
    lags = [r.ran_at - r.sampled_at.timestamp() for r in paired if r.sampled_at]
    assert max(lags) <= LAG_BOUND_S, f"a reading {max(lags):.0f} s old; at most {LAG_BOUND_S} s: {readings}"

    # They rise as it grows: one figure per sample, never below the one before, and above it where the samples lie
    # a step apart (the API times them to the second, and a step takes a moment): two samples within one step read
    # the same (one CI run had the kubelet sample 1 s apart, 29 and 29 MiB, under the tests beside the climb).
    by_sample = sorted({r.sampled_at: r.mib for r in before_kill if r.sampled_at is not None}.items())
    climb = [mib for _, mib in by_sample]
    assert len(set(climb)) >= RISING_SAMPLES, f"only {len(set(climb))} figures of the climb: {readings}"
    assert all(a <= b for a, b in itertools.pairwise(climb)), f"the readings fell: {by_sample}"
    step_apart = datetime.timedelta(milliseconds=INTERVAL_MS, seconds=STEP_APART_MARGIN_S)
    apart = [(a, b) for a, b in itertools.pairwise(by_sample) if b[0] - a[0] >= step_apart]
    assert all(a[1] < b[1] for a, b in apart), f"the readings did not rise over a step: {by_sample}"
    assert max(r.mib for r in paired) < limit_mib

    # The restarted container reads small again: its first sample, held above to its own figure then, lies below
    # what its predecessor reached, by more than the increment.
    first_sample = min(r.sampled_at for r in after_restart if r.sampled_at)
    restarted = next(r for r in after_restart if r.sampled_at == first_sample)
    age_s = (first_sample - restarted_at).total_seconds()
    assert restarted.mib < first_steps[-1].working_set_mib - INCREMENT_MIB, (restarted, first_steps[-1])

    fact(
        "kubectl_top",
        f"ok samples={len(paired)} distinct_climb={len(set(climb))} climb_mib={','.join(map(str, climb))} "
        f"max_mib={max(r.mib for r in paired)} hog_working_set_mib={max(figures)} limit_mib={limit_mib} "
        f"gap_mib_max={max(gaps)} tolerance_mib={INCREMENT_MIB} "
        f"killed_at_working_set_mib={first_steps[-1].working_set_mib} "
        f"restarted_mib={restarted.mib} restarted_sample_age_s={age_s:.0f} "
        f"baseline_mib={second_start['cgroup_usage_mib']} lag_s_max={max(lags):.0f} bound_s={LAG_BOUND_S} "
        f"killed_log_from={watched.killed_log_from}",
    )


# -- Headlamp, in a real browser ----------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_headlamp_shows_the_kill_and_the_memory(climb: Climb) -> None:
    """Headlamp, signed in with a `view` token, shows what a person looks for: on the pod's page its container's
    last state OOMKilled with exit code 137 and the restart count; in the namespace's pod list the restarts and the
    memory metrics-server reports (the metrics API's own figure of the moment, in Headlamp's 0.1 Mi); among the
    namespace's events, the container started again as often as it restarted, plus once. The climb read the pages
    right after the restart (tests/e2e/watching.py: check_headlamp); this is its verdict."""
    lacking = headlamp.missing() or browser.missing()
    require(lacking is None, lacking or "")
    climb.headlamp_outcome()
