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

import contextlib
import datetime
import itertools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import docker
import pytest
from kubernetes import client
from kubernetes.utils import parse_quantity

from oomtools.rehearsal import build_image, declared_pod
from oomtools.render import stack_config
from tests import browser, report_check
from tests.e2e import headlamp
from tests.e2e.cluster import Cluster, as_json
from tests.e2e.harness.state import BIN
from tests.e2e.metrics_server import METRIC_RESOLUTION_S, api_service_conditions, start_metrics_server
from tests.e2e.support import apply_in_dependency_order, fact, render_for_the_node, until, workload_archive
from tests.support import require
from workload import logfmt
from workload.memory import MIB

pytestmark = pytest.mark.e2e

NAMESPACE = "kubectl-top"
# The dev stack's 128 MiB limit, climbed slowly enough to watch: 8 MiB every 8 s takes ~15 steps, ~2 minutes, from
# the few MiB the interpreter starts with to the kill. The kubelet samples a growing container every 10 to 20 s, so
# each sample falls at least one step after the one before (the readings rise). The first figure comes within ~30 s
# of the start, leaving ~90 s of the climb: six of metrics-server's 15 s scrapes, of which at least every other one
# takes a newer sample (the kubelet's are at most 20 s apart): RISING_SAMPLES with room to spare.
INCREMENT_MIB = 8
INTERVAL_MS = 8000
SETTINGS = {"memoryIncrementMb": str(INCREMENT_MIB), "incrementIntervalMs": str(INTERVAL_MS)}
# How old a reading may be when kubectl prints it: the kubelet's cAdvisor refreshes a container's stats at most
# 15 s apart (its longest housekeeping interval), jittered by up to as much again; metrics-server scrapes every
# METRIC_RESOLUTION_S, a scrape taking up to its 10 s kubelet request timeout.
KUBELET_STATS_AGE_S = 2 * 15
SCRAPE_TIMEOUT_S = 10
LAG_BOUND_S = KUBELET_STATS_AGE_S + METRIC_RESOLUTION_S + SCRAPE_TIMEOUT_S
RISING_SAMPLES = 3  # distinct samples of the first container, each above the one before
NAMESPACE_GONE_TIMEOUT_S = 120.0
WATCH_TIMEOUT_S = 300.0  # the climb (~2 minutes), the kill, and the restarted container's first scrapes


@dataclass(frozen=True)
class Reading:
    """One `kubectl top pod`: when it ran, the Mi it printed, and the sample it printed (the metrics API's
    timestamp, read just before and just after, the same both times), or None where a scrape came in between."""

    ran_at: float
    mib: int
    sampled_at: datetime.datetime | None


@dataclass(frozen=True)
class Step:
    at: datetime.datetime  # the runtime's timestamp of the step line
    working_set_mib: int


def _kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "HOME": str(cluster.workdir)},  # kubectl's discovery cache goes with the cluster
    )


def _sample(api: client.ApiClient) -> tuple[str, int] | None:
    """The metrics API's one pod in the namespace: (timestamp, working set in bytes)."""
    found = cast(
        dict[str, Any],
        client.CustomObjectsApi(api).list_namespaced_custom_object("metrics.k8s.io", "v1beta1", NAMESPACE, "pods"),
    )
    if len(found["items"]) != 1:
        return None
    item = found["items"][0]
    return str(item["timestamp"]), int(parse_quantity(item["containers"][0]["usage"]["memory"]))


def _time(text: str) -> datetime.datetime:
    """An RFC 3339 time from the API or the kubelet's log (nanoseconds cut to microseconds)."""
    text = text.replace("Z", "+00:00")
    if "." in text:
        whole, rest = text.split(".", 1)
        digits = rest[: next((i for i, c in enumerate(rest) if not c.isdigit()), len(rest))]
        text = f"{whole}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    return datetime.datetime.fromisoformat(text)


def _read(cluster: Cluster, api: client.ApiClient) -> Reading | None:
    before = _sample(api)
    ran_at = time.time()
    top = _kubectl(cluster, "top", "pod", "--namespace", NAMESPACE, "--no-headers")
    after = _sample(api)
    if top.returncode != 0 or not top.stdout.strip():
        return None  # no figure yet (a new or restarted container waits for its scrapes): kubectl says so
    fields = top.stdout.split()
    assert len(fields) == 3, f"kubectl top printed {top.stdout!r}"
    assert fields[2].endswith("Mi"), f"kubectl top printed {top.stdout!r}"
    mib = int(fields[2].removesuffix("Mi"))
    if before is None or before != after:
        return Reading(ran_at, mib, None)
    # The API's figure of that very sample: kubectl prints it in whole Mi.
    assert mib == before[1] // MIB, f"kubectl top printed {mib}Mi, the metrics API says {before[1]} bytes"
    return Reading(ran_at, mib, _time(before[0]))


def _steps(core: client.CoreV1Api, pod: str, *, previous: bool) -> tuple[dict[str, str], list[Step]]:
    """A container's start line and its steps, each at the kubelet's timestamp."""
    log = core.read_namespaced_pod_log(pod, NAMESPACE, previous=previous, timestamps=True)
    start: dict[str, str] = {}
    steps: list[Step] = []
    for text in log.splitlines():
        stamp, _, message = text.partition(" ")
        fields = logfmt.parse(message)
        if fields.get("event") == "start":
            start = fields
        elif fields.get("event") == "step":
            steps.append(Step(_time(stamp), int(fields["working_set_mib"])))
    assert start, f"no start line in the log:\n{log[-2000:]}"
    assert steps, f"no step in the log:\n{log[-2000:]}"
    return start, steps


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


def _watch(cluster: Cluster, api: client.ApiClient) -> tuple[list[Reading], dict[str, Any], datetime.datetime]:
    """kubectl top, every 2 s, until a reading whose sample is of the restarted container: the readings, the pod as
    last seen, and when its container started again."""
    core = client.CoreV1Api(api)
    readings: list[Reading] = []
    pod: dict[str, Any] = {}
    restarted_at: datetime.datetime | None = None
    deadline = time.monotonic() + WATCH_TIMEOUT_S
    while time.monotonic() < deadline:
        reading = _read(cluster, api)
        if reading is not None:
            readings.append(reading)
        pods = as_json(api, core.list_namespaced_pod(NAMESPACE))["items"]
        if len(pods) == 1:
            pod = pods[0]
            status = (pod["status"].get("containerStatuses") or [{}])[0]
            started = status.get("state", {}).get("running", {}).get("startedAt")
            if status.get("restartCount") == 1 and started:
                restarted_at = _time(started)
        if restarted_at and any(r.sampled_at and r.sampled_at > restarted_at for r in readings):
            return readings, pod, restarted_at
        time.sleep(2)
    pytest.fail(
        f"no reading of a restarted container within {WATCH_TIMEOUT_S:.0f} s: {readings}; pod {pod.get('status')}"
    )


@dataclass(frozen=True)
class Watched:
    """One climb to the kill and the restart after it, as `kubectl top` followed it; the pod still runs."""

    readings: list[Reading]
    pod: dict[str, Any]  # as last seen: restarted once
    restarted_at: datetime.datetime
    limit_mib: int
    first: tuple[dict[str, str], list[Step]]  # the killed container's start line and steps
    second: tuple[dict[str, str], list[Step]]  # the restarted one's


@pytest.fixture(scope="module")
def watched(cluster: Cluster, engine: docker.DockerClient) -> Iterator[Watched]:
    """metrics-server, the hog climbing to its kill under `kubectl top` every 2 s, and Headlamp deployed beside the
    climb (its image is made first, so that the climb's readings start at once); the namespaces go at the end."""
    for binary in ("metrics-server", "kubectl"):
        assert (BIN / binary).exists(), f"{BIN / binary} is not built (tests/e2e/builds/build.sh builds it)"
    version = _kubectl(cluster, "version", "--client", "--output=json")
    assert '"gitVersion": "v1.37.2"' in version.stdout, version.stdout + version.stderr

    with start_metrics_server(cluster):
        api = cluster.api()
        core = client.CoreV1Api(api)
        # A run before this one (make soak, pytest --count) deleted its namespace: gone before this one makes it.
        earlier = {NAMESPACE, headlamp.NAMESPACE}
        until(
            f"namespaces {', '.join(sorted(earlier))} of an earlier run gone",
            lambda: not earlier & {n.metadata.name for n in core.list_namespace().items if n.metadata},
            NAMESPACE_GONE_TIMEOUT_S,
        )
        available = api_service_conditions(api)["Available"]
        assert available["status"] == "True", available

        rendered = render_for_the_node({**stack_config("dev"), **SETTINGS, "namespace": NAMESPACE}, NAMESPACE)
        cluster.load_image(workload_archive(engine, build_image(engine, declared_pod(rendered))))
        dashboard_missing = headlamp.missing()  # its test says so (skipped, or failed where CI is set)
        dashboard = headlamp.image_archive(engine) if dashboard_missing is None else None
        limit_mib = int(
            rendered.one("kubernetes:apps/v1:Deployment")
            .inputs["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
            .removesuffix("Mi")
        )
        apply_in_dependency_order(api, rendered)
        try:
            with headlamp.deploy(cluster, dashboard) if dashboard else contextlib.nullcontext():
                readings, pod, restarted_at = _watch(cluster, api)
                name = pod["metadata"]["name"]
                yield Watched(
                    readings,
                    pod,
                    restarted_at,
                    limit_mib,
                    _steps(core, name, previous=True),
                    _steps(core, name, previous=False),
                )
        finally:
            core.delete_namespace(NAMESPACE)


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

    # They rise as it grows: one figure per sample, each above the one before.
    by_sample = sorted({r.sampled_at: r.mib for r in before_kill}.items())
    climb = [mib for _, mib in by_sample]
    assert len(climb) >= RISING_SAMPLES, f"only {len(climb)} samples of the climb: {readings}"
    assert all(a < b for a, b in itertools.pairwise(climb)), f"the readings did not rise: {by_sample}"
    assert max(r.mib for r in paired) < limit_mib

    # The restarted container reads small again: its first sample, held above to its own figure then, lies below
    # what its predecessor reached, by more than the increment.
    first_sample = min(r.sampled_at for r in after_restart if r.sampled_at)
    restarted = next(r for r in after_restart if r.sampled_at == first_sample)
    age_s = (first_sample - restarted_at).total_seconds()
    assert restarted.mib < first_steps[-1].working_set_mib - INCREMENT_MIB, (restarted, first_steps[-1])

    fact(
        "kubectl_top",
        f"ok samples={len(paired)} distinct_climb={len(climb)} climb_mib={','.join(map(str, climb))} "
        f"max_mib={max(r.mib for r in paired)} hog_working_set_mib={max(figures)} limit_mib={limit_mib} "
        f"gap_mib_max={max(gaps)} tolerance_mib={INCREMENT_MIB} "
        f"killed_at_working_set_mib={first_steps[-1].working_set_mib} "
        f"restarted_mib={restarted.mib} restarted_sample_age_s={age_s:.0f} "
        f"baseline_mib={second_start['cgroup_usage_mib']} lag_s_max={max(lags):.0f} bound_s={LAG_BOUND_S}",
    )


# -- Headlamp, in a real browser ----------------------------------------------------------------------------------

SCREENSHOTS_ENV = "OOM_KILLER_SCREENSHOTS"  # a folder (docs/, by make headlamp-screenshots) to keep the pages in
PAGE_TIMEOUT_S = 60.0


def _wait_for_text(driver: Any, wanted: Callable[[str], bool], what: str, timeout: float = PAGE_TIMEOUT_S) -> str:
    """The page's visible text, once `wanted` holds of it (Headlamp fills a page as its requests answer)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = str(driver.execute_script("return document.body.innerText"))
        if wanted(text):
            return text
        time.sleep(0.5)
    pytest.fail(f"Headlamp's page at {driver.current_url} never showed {what} in {timeout:.0f} s:\n{text[-3000:]}")


def _sign_in(driver: Any, site: headlamp.Headlamp) -> None:
    """As a person signs in: Headlamp asks for a token at its first page; the viewer's is pasted in."""
    from selenium.webdriver.common.by import By

    driver.get(site.url)
    _wait_for_text(driver, lambda text: "ID token" in text or "Authenticate" in text, "the token prompt")
    driver.find_element(By.XPATH, "//label[text()='ID token']/following::input[1]").send_keys(site.token)
    driver.find_element(By.XPATH, "//button[normalize-space()='Authenticate']").click()
    _wait_for_text(driver, lambda text: "ID token" not in text, "the signed-in page")


def _keep(driver: Any, shots: Path, name: str) -> Path:
    """A screenshot of the window as it shows the page, in `shots` (kept after the run, beside the e2e reports), and
    in $OOM_KILLER_SCREENSHOTS if set."""
    path = shots / f"{name}.png"
    driver.save_screenshot(str(path))
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        shutil.copy(path, Path(folder) / path.name)
    return path


def _after(lines: list[str], label: str, start: int = 0) -> str:
    """The first line with text after the first line that reads `label` (from line `start`): how Headlamp's
    details read as text, each label above its value."""
    at = lines.index(label, start)
    return next(line for line in lines[at + 1 :] if line.strip())


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def _show(driver: Any, text: str) -> None:
    """Scroll the first element that reads exactly `text` to the top of the window, as a person scrolls to it."""
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.XPATH, f"//*[normalize-space(text())='{text}']")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", element)


@pytest.mark.timeout(600)
def test_headlamp_shows_the_kill_and_the_memory(cluster: Cluster, watched: Watched) -> None:
    """Headlamp, signed in with a `view` token, shows what a person looks for: on the pod's page its container's
    last state OOMKilled with exit code 137 and the restart count; in the namespace's pod list the restarts and the
    memory metrics-server reports (the metrics API's own figure of the moment, in Headlamp's 0.1 Mi); among the
    namespace's events, the container started again as often as it restarted, plus once."""
    lacking = headlamp.missing() or browser.missing()
    require(lacking is None, lacking or "")
    from selenium.webdriver.common.by import By

    shots = report_check.folder("headlamp")
    api = cluster.api()
    core = client.CoreV1Api(api)
    name = watched.pod["metadata"]["name"]
    with headlamp.reach(cluster) as site, browser.chromium(1400, 900) as driver:
        _sign_in(driver, site)

        # The pod's page: its container's last state, exit code and restart count, as the API has them now.
        driver.get(site.pod_page(NAMESPACE, name))
        text = _wait_for_text(driver, lambda text: "Last State" in text and "Exit Code" in text, "the last state")
        status = as_json(api, core.read_namespaced_pod(name, NAMESPACE))["status"]["containerStatuses"][0]
        lines = _lines(text)
        containers = lines.index("Containers")
        shown_restarts = int(_after(lines, "Restart Count", containers))
        last_state = _after(lines, "Last State", containers)
        exit_code = int(_after(lines, "Exit Code", containers))
        assert "OOMKilled" in last_state, f"Headlamp's last state reads {last_state!r}"
        assert exit_code == status["lastState"]["terminated"]["exitCode"] == 137, (exit_code, status["lastState"])
        assert shown_restarts == status["restartCount"] >= 1, (shown_restarts, status["restartCount"])
        _show(driver, "Containers")
        _keep(driver, shots, "headlamp-pod")

        # The namespace's pods: restarts, and the working set metrics-server has, read just before and after.
        before = _sample(api)
        driver.get(f"{site.url}/c/{site.cluster}/pods?namespace={NAMESPACE}")
        text = _wait_for_text(driver, lambda text: re.search(r"^\d+(\.\d)? Mi$", text, re.M) is not None, "memory")
        after = _sample(api)
        lines = _lines(text)
        row = lines[lines.index(name) + 1 :]
        memory_mib = float(next(line for line in row if line.endswith(" Mi")).removesuffix(" Mi"))
        restarts_cell = next(line for line in row if re.fullmatch(r"\d+( \(.+ ago\))?", line))
        assert int(restarts_cell.split()[0]) == shown_restarts, (restarts_cell, shown_restarts)
        samples = {sample[1] / MIB for sample in (before, after) if sample is not None}
        assert samples, "the metrics API had no figure of the pod"
        # Headlamp rounds to 0.1 Mi (lodash round): the shown figure is within half of that of a sample's.
        assert any(abs(memory_mib - sample) <= 0.05 + 1e-9 for sample in samples), (memory_mib, samples)
        assert memory_mib < watched.limit_mib
        _keep(driver, shots, "headlamp-pods")

        # The namespace's events (the cluster overview, all events shown, not only warnings): the container's
        # Started event counted once per start.
        started = [
            e for e in core.list_namespaced_event(NAMESPACE).items if e.reason == "Started" and e.count is not None
        ]
        assert len(started) == 1, [(e.reason, e.count) for e in started]
        driver.get(f"{site.url}/c/{site.cluster}?namespace={NAMESPACE}")
        _wait_for_text(driver, lambda text: "Only warnings" in text, "the events' filter")
        driver.find_element(By.XPATH, "//*[contains(normalize-space(text()), 'Only warnings')]").click()
        text = _wait_for_text(driver, lambda text: "Started" in text, "the Started event")
        lines = _lines(text)
        # The row: the reason, the message, then its count.
        at = lines.index("Started")
        counts = [int(line) for line in lines[at + 1 : at + 6] if line.isdigit()]
        assert counts, f"no count beside the Started event: {lines[at : at + 6]}"
        assert counts[0] == started[0].count == shown_restarts + 1, (lines[at : at + 6], started[0].count)
        _show(driver, "Events")
        _keep(driver, shots, "headlamp-events")

    fact(
        "dashboard",
        f"headlamp version={headlamp.VERSION} oomkilled_shown=true exit_code_shown={exit_code} "
        f"restarts_shown={shown_restarts} memory_shown_mib={memory_mib} "
        f"metrics_api_mib={','.join(f'{m:.2f}' for m in sorted(samples))} started_events_shown={counts[0]} "
        f"signed_in_as=view screenshots={shots}",
    )
