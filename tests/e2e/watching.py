"""The climb `kubectl top` and Headlamp are watched over (tests/e2e/test_watching.py), run beside other tests.

The climb is two minutes of waiting on the hog's steps and the kubelet's samples, and nothing of it needs the
machine to itself: a thread starts it while the modules before test_watching.py run (conftest.py orders them and
starts it; none of them stops the API server, a kubelet or containerd), and test_watching.py waits for what it
collected. `kubectl top` runs every 2 s; a request the loaded API server fails is asked again.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import docker
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from oomtools.rehearsal import build_image, declared_pod
from oomtools.render import Rendered, stack_config
from tests import browser, report_check
from tests.e2e import headlamp
from tests.e2e.cluster import Cluster, as_json
from tests.e2e.harness.state import BIN
from tests.e2e.metrics_server import METRIC_RESOLUTION_S, api_service_conditions, start_metrics_server
from tests.e2e.support import apply_in_dependency_order, fact, render_for_the_node, until, workload_archive
from workload import logfmt
from workload.memory import MIB

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
SETUP_TIMEOUT_S = 240.0  # before the climb: metrics-server, the hog's and Headlamp's images, an earlier namespace gone


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


def kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "HOME": str(cluster.workdir)},  # kubectl's discovery cache goes with the cluster
    )


def sample(api: client.ApiClient) -> tuple[str, int] | None:
    """The metrics API's one pod in the namespace: (timestamp, working set in bytes)."""
    found = cast(
        dict[str, Any],
        client.CustomObjectsApi(api).list_namespaced_custom_object("metrics.k8s.io", "v1beta1", NAMESPACE, "pods"),
    )
    if len(found["items"]) != 1:
        return None
    item = found["items"][0]
    return str(item["timestamp"]), int(parse_quantity(item["containers"][0]["usage"]["memory"]))


def parse_time(text: str) -> datetime.datetime:
    """An RFC 3339 time from the API or the kubelet's log (nanoseconds cut to microseconds)."""
    text = text.replace("Z", "+00:00")
    if "." in text:
        whole, rest = text.split(".", 1)
        digits = rest[: next((i for i, c in enumerate(rest) if not c.isdigit()), len(rest))]
        text = f"{whole}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    return datetime.datetime.fromisoformat(text)


def read(cluster: Cluster, api: client.ApiClient) -> Reading | None:
    before = sample(api)
    ran_at = time.time()
    top = kubectl(cluster, "top", "pod", "--namespace", NAMESPACE, "--no-headers")
    after = sample(api)
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
    return Reading(ran_at, mib, parse_time(before[0]))


def steps_of(log: str) -> tuple[dict[str, str], list[Step]]:
    """A container's start line and its steps, each at the kubelet's timestamp, from its log as
    `kubectl logs --timestamps` gives it."""
    start: dict[str, str] = {}
    steps: list[Step] = []
    for text in log.splitlines():
        stamp, _, message = text.partition(" ")
        fields = logfmt.parse(message)
        if fields.get("event") == "start":
            start = fields
        elif fields.get("event") == "step":
            steps.append(Step(parse_time(stamp), int(fields["working_set_mib"])))
    assert start, f"no start line in the log:\n{log[-2000:]}"
    assert steps, f"no step in the log:\n{log[-2000:]}"
    return start, steps


def killed_containers_log(core: client.CoreV1Api, pod: str, followed: str) -> tuple[str, str]:
    """The killed container's log, and where it came from: the kubelet's `--previous`, or where the kubelet no
    longer has it (one CI run answered "unable to retrieve container logs"), the log as `watch` last read it while
    the container ran: its last step line is logged a whole interval before the step the kill comes in."""
    try:
        log = core.read_namespaced_pod_log(pod, NAMESPACE, previous=True, timestamps=True)
    except ApiException:
        log = ""
    if "event=start" in log:
        return log, "previous"
    return followed, "followed"


def watch(cluster: Cluster, api: client.ApiClient) -> tuple[list[Reading], dict[str, Any], datetime.datetime, str]:
    """kubectl top, every 2 s, until a reading whose sample is of the restarted container: the readings, the pod as
    last seen, when its container started again, and the first container's log as last read while it ran."""
    core = client.CoreV1Api(api)
    readings: list[Reading] = []
    pod: dict[str, Any] = {}
    restarted_at: datetime.datetime | None = None
    followed = ""
    deadline = time.monotonic() + WATCH_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            reading = read(cluster, api)
            pods = as_json(api, core.list_namespaced_pod(NAMESPACE))["items"]
            status = (pods[0]["status"].get("containerStatuses") or [{}])[0] if len(pods) == 1 else {}
            if status.get("restartCount") == 0 and "running" in status.get("state", {}):
                followed = core.read_namespaced_pod_log(pods[0]["metadata"]["name"], NAMESPACE, timestamps=True)
        except (ApiException, urllib3.exceptions.HTTPError):
            time.sleep(2)  # the tests beside it load the API server: a request that failed is asked again
            continue
        if reading is not None:
            readings.append(reading)
        if len(pods) == 1:
            pod = pods[0]
            started = status.get("state", {}).get("running", {}).get("startedAt")
            if status.get("restartCount") == 1 and started:
                restarted_at = parse_time(started)
        if restarted_at and any(r.sampled_at and r.sampled_at > restarted_at for r in readings):
            return readings, pod, restarted_at, followed
        time.sleep(2)
    raise AssertionError(
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
    killed_log_from: str = "previous"  # where the killed container's log came from (killed_containers_log)


class Climb:
    """metrics-server, the hog climbing to its kill under `kubectl top` every 2 s, and Headlamp deployed beside the
    climb (its image made first, so that the readings start at once), in a thread of its own: `start()` (again: a
    no-op), `wait()` for what it watched (raising what it raised), `close()` to delete the namespaces and stop
    metrics-server and Headlamp's relay."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.left: contextlib.ExitStack = contextlib.ExitStack()
        self.thread: threading.Thread | None = None
        self.watched: Watched | None = None
        self.error: BaseException | None = None
        self.rendered: Rendered | None = None
        self.headlamp_checked = False
        self.headlamp_error: BaseException | None = None

    def start(self) -> None:
        if self.thread is None:
            # Rendered here, in the caller's thread: Pulumi's mocks are the process's, and need its event loop.
            self.rendered = render_for_the_node({**stack_config("dev"), **SETTINGS, "namespace": NAMESPACE}, NAMESPACE)
            self.thread = threading.Thread(target=self._run, name="watched-climb", daemon=True)
            self.thread.start()

    def wait(self) -> Watched:
        self.start()
        assert self.thread is not None
        self.thread.join(WATCH_TIMEOUT_S + SETUP_TIMEOUT_S)
        if self.thread.is_alive():
            raise AssertionError(f"the climb was not watched to its restart in {WATCH_TIMEOUT_S + SETUP_TIMEOUT_S} s")
        if self.error is not None:
            raise self.error
        assert self.watched is not None
        return self.watched

    def headlamp_outcome(self) -> None:
        """What reading Headlamp's pages after the watch found: nothing raised, or what it raised."""
        self.wait()
        if self.headlamp_error is not None:
            raise self.headlamp_error
        assert self.headlamp_checked, "Headlamp was not deployed beside the climb"

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join(WATCH_TIMEOUT_S + SETUP_TIMEOUT_S)
        self.left.close()

    def _run(self) -> None:
        try:
            self.watched = self._climb()
        except BaseException as error:  # whatever it is, wait() raises it in the test
            self.error = error

    def _climb(self) -> Watched:
        cluster = self.cluster
        engine = docker.from_env()  # its own client (docker-py's is not shared), as the engine fixture made its own
        for binary in ("metrics-server", "kubectl"):
            assert (BIN / binary).exists(), f"{BIN / binary} is not built (tests/e2e/builds/build.sh builds it)"
        version = kubectl(cluster, "version", "--client", "--output=json")
        assert '"gitVersion": "v1.37.2"' in version.stdout, version.stdout + version.stderr

        self.left.enter_context(start_metrics_server(cluster))
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

        rendered = self.rendered
        assert rendered is not None
        cluster.load_image(workload_archive(engine, build_image(engine, declared_pod(rendered))))
        dashboard = headlamp.image_archive(engine) if headlamp.missing() is None else None
        limit_mib = int(
            rendered.one("kubernetes:apps/v1:Deployment")
            .inputs["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
            .removesuffix("Mi")
        )
        apply_in_dependency_order(api, rendered)
        self.left.callback(core.delete_namespace, NAMESPACE)
        if dashboard:
            self.left.enter_context(headlamp.deploy(cluster, dashboard))
        readings, pod, restarted_at, followed = watch(cluster, api)
        name = pod["metadata"]["name"]
        killed_log, killed_log_from = killed_containers_log(core, name, followed)
        watched = Watched(
            readings,
            pod,
            restarted_at,
            limit_mib,
            steps_of(killed_log),
            steps_of(core.read_namespaced_pod_log(name, NAMESPACE, timestamps=True)),
            killed_log_from,
        )
        # Headlamp's pages are read now, as a person would right after the restart: the restarted container has its
        # first figure and the next kill is a climb away (test_headlamp_shows_the_kill_and_the_memory judges it).
        if dashboard and browser.missing() is None:
            try:
                check_headlamp(cluster, watched)
            except BaseException as error:  # its test raises it
                self.headlamp_error = error
            self.headlamp_checked = True
        return watched


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
    raise AssertionError(
        f"Headlamp's page at {driver.current_url} never showed {what} in {timeout:.0f} s:\n{text[-3000:]}"
    )


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


def check_headlamp(cluster: Cluster, watched: Watched) -> None:
    """Headlamp, signed in with a `view` token, shows what a person looks for: on the pod's page its container's
    last state OOMKilled with exit code 137 and the restart count; in the namespace's pod list the restarts and the
    memory metrics-server reports (the metrics API's own figure of the moment, in Headlamp's 0.1 Mi); among the
    namespace's events, the container started again as often as it restarted, plus once."""
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
        before = sample(api)
        driver.get(f"{site.url}/c/{site.cluster}/pods?namespace={NAMESPACE}")
        text = _wait_for_text(driver, lambda text: re.search(r"^\d+(\.\d)? Mi$", text, re.M) is not None, "memory")
        after = sample(api)
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
