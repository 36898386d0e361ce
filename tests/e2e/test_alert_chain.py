"""The alert rules on the cluster's own metrics, delivered: each model and kind of the stack deployed as it declares
itself, kube-state-metrics and the kubelet's cAdvisor scraped by Prometheus with the rule file loaded (durations
divided by monitoring.SPEED), Alertmanager delivering to a webhook served here. What each stack's settings predict
(make verify's own prediction) is what must be delivered: the kill loop's ContainerOOMKilled and then
ContainerCrashLooping, the supervised worker's ContainerOOMKillWithoutRestart, nothing for a pod that holds; and
after replicas=0, every alert resolved and the resolution delivered.

Latency is measured per alert from the kill (the kubelet's finishedAt; for a worker, the supervisor's kubelet-stamped
log line) to the first scrape that shows it, to firing (the first ALERTS sample), to the webhook's receipt.
"""

from __future__ import annotations

import datetime
import io
import json
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest
import yaml
from kubernetes import client

from infra.monitoring import RULES_FILE
from oomtools import alert_client as prom
from oomtools import verify
from oomtools.rehearsal import build_image, declared_pod
from oomtools.render import Rendered, stack_config
from oomtools.verify.arguments import parse_duration
from tests import report_check
from tests.e2e.cluster import Cluster, as_json
from tests.e2e.monitoring import GROUP_INTERVAL_S, GROUP_WAIT_S, SCRAPE_INTERVAL_S, SPEED, Chain, start_chain
from tests.e2e.support import apply_in_dependency_order, fact, line, render_for_the_node, workload_archive
from workload import logfmt

pytestmark = pytest.mark.e2e

# Each model and kind, and two pods that hold: settings beyond the dev stack's (128 MiB, 16 MiB a second).
REPORTED = "supervised"  # the stack whose `verify --report` and `--save` the report's test reads
STACKS: dict[str, dict[str, str]] = {
    "single": {},
    "single-tmpfs": {"memoryKind": "tmpfs"},
    "supervised": {"processModel": "supervised"},
    "supervised-tmpfs": {"processModel": "supervised", "memoryKind": "tmpfs"},
    "pagecache": {"memoryKind": "pagecache"},
    "ceiling": {"memoryCeilingMb": "112"},  # held 16 MiB under the limit
    "ceiling-pct": {"memoryCeilingPct": "95"},  # held at 95% of the limit (issue 31)
    "pod-scope": {"limitScope": "pod"},  # the limit on the pod, none on the container (issue 31)
    "healthy": {"memoryCeilingMb": "32"},
}
# Stacks whose pod (as the API gives it) and current log the tests read, besides the holding stacks' logs.
EXAMINED = ("pod-scope",)
DELIVERY_TIMEOUT_S = 300.0
# The upper bounds on each stage (issue 28), from the chain's own timings: the margin is what two loaded cores may add
# (measured 0 to 2.3 s over the sums below in CI runs; docs/alerts.md gives the user's unscaled figures).
MARGIN_S = 10.0
# From a kill to the first scrape showing it: the kubelet's status (PLEG's 1 s relist) through kube-state-metrics'
# watch for a container's death; cAdvisor's housekeeping (10 to 15 s) for a worker's, counted in
# container_oom_events_total. Either way one scrape interval more.
EVIDENCE_BOUND_S = {
    "ContainerOOMKilled": 1.0 + SCRAPE_INTERVAL_S,
    "ContainerOOMKillWithoutRestart": 15.0 + SCRAPE_INTERVAL_S,
}


def _for_seconds(alert: str) -> float:
    """The rule's `for:` as the chain runs it (divided by SPEED)."""
    rules = [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]
    (rule,) = [rule for rule in rules if rule.get("alert") == alert]
    return parse_duration(rule["for"]) / SPEED


def _delivery_bound(alert: str) -> float:
    """From the first scrape showing the kill to the webhook's receipt, at most: the evaluation that first sees it
    (one interval), a second sample for increase() over a counter (one more), the `for:`, rounded up to the next
    evaluation (one more), then Alertmanager's group_wait; the margin on top."""
    return 3 * SCRAPE_INTERVAL_S + _for_seconds(alert) + GROUP_WAIT_S + MARGIN_S


RESOLUTION_TIMEOUT_S = 60 * 10 / SPEED + 2 * GROUP_INTERVAL_S + 30  # the longest look-back, then a flush or two


@dataclass
class Stack:
    name: str
    namespace: str
    rendered: Rendered
    expected: dict[str, bool]  # alert name -> predicted to fire
    killed_at: float | None = None  # the first kill, by the kubelet's clock

    @property
    def expected_alerts(self) -> set[str]:
        return {name for name, fires in self.expected.items() if fires}


@dataclass
class Latency:
    alert: str
    stack: str
    scraped_after_s: float | None
    fired_after_s: float | None
    delivered_after_s: float | None
    resolved_delivered_after_s: float | None = None  # from the scale-down


@dataclass
class Verified:
    """make verify's run against the stack, with the chain's Prometheus and Alertmanager."""

    code: int
    lines: list[dict[str, str]]
    err: str
    junit: ET.Element

    def coverage(self) -> list[dict[str, str]]:
        return [line for line in self.lines if line.get("event") == "coverage"]


@dataclass
class Rehearsal:
    chain: Chain
    stacks: dict[str, Stack]
    deployed_at: float = 0.0
    scaled_down_at: float = 0.0
    latencies: list[Latency] = field(default_factory=list)
    verified: dict[str, Verified] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)  # the holding stacks' pod logs, read before the scale-down
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # EXAMINED stacks' pods, before the scale-down


def _environment(rendered: Rendered) -> dict[str, str]:
    container = rendered.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: str(item.get("value", "")) for item in container.get("env", [])}


def _stamp(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _first_kill(core: client.CoreV1Api, stack: Stack) -> float | None:
    """The first OOM kill of the stack's pod: the kubelet's finishedAt, or for a worker its supervisor's log line."""
    pods: list[Any] = core.list_namespaced_pod(stack.namespace).items
    for pod in pods:
        for status in pod.status.container_statuses or []:
            terminated = status.last_state.terminated if status.last_state else None
            if terminated is not None and terminated.reason == "OOMKilled" and status.restart_count == 1:
                return _stamp(terminated.finished_at)
        if stack.expected["ContainerOOMKillWithoutRestart"] and pod.status.phase == "Running":
            observed = verify.Observed()
            log = core.read_namespaced_pod_log(pod.metadata.name, stack.namespace, timestamps=True)
            verify.record_worker_kills(observed, pod.metadata.name, "oom-killer", log, lambda _line: None)
            kills = sorted(kill.at.timestamp() for kill in observed.worker_kills.values())
            if kills:
                return kills[0]
    return None


def _verify(cluster: Cluster, chain: Chain, stack: Stack) -> Verified:
    """`oom-killer verify` on the stack as a user runs it beside their monitoring: --prometheus, --alertmanager."""
    exports = stack.rendered.exports
    outputs = {key: exports[key] for key in ("namespace", "deploymentName", "predictedSecondsToOomKill")}
    outputs["predictedOomKillStep"] = exports.get("predictedOomKillStep")
    with tempfile.TemporaryDirectory() as folder:
        junit = f"{folder}/verify.xml"
        argv = ["--outputs", json.dumps(outputs), "--kubeconfig", str(cluster.kubeconfig), "--junit", junit]
        argv += ["--prometheus", chain.prometheus, "--alertmanager", chain.alertmanager, "--detector-grace", "30s"]
        # Holding stacks: the whole window is the evidence; a kill loop's two kills and back-off take under a minute.
        argv += ["--timeout", "4m" if stack.expected_alerts else "75s", "--kills", "2"]
        if stack.name == REPORTED:  # its report and saved results, kept for test_the_supervised_stack_s_report
            argv += report_check.report_args(report_check.folder(f"alert-chain-{stack.name}"))
        out, err = io.StringIO(), io.StringIO()
        code = verify.main(argv, out=out, err=err)
        lines = [logfmt.parse(text) for text in out.getvalue().splitlines()]
        return Verified(code, lines, err.getvalue(), ET.parse(junit).getroot())  # noqa: S314 (verify's own report)


def _deploy(cluster: Cluster, engine: docker.DockerClient) -> dict[str, Stack]:
    stacks = {}
    for name, settings in STACKS.items():
        namespace = f"alerts-{name}"
        rendered = render_for_the_node({**stack_config("dev"), **settings, "namespace": namespace}, namespace)
        prediction = verify.predict(rendered.exports, 1, _environment(rendered))
        stacks[name] = Stack(name, namespace, rendered, prediction.alerts_expected())
    first = next(iter(stacks.values()))
    tag = build_image(engine, declared_pod(first.rendered))  # one image: the settings are the pod's environment
    cluster.load_image(workload_archive(engine, tag))
    api = cluster.api()
    for stack in stacks.values():
        apply_in_dependency_order(api, stack.rendered)
    return stacks


def _delivered(chain: Chain, stack: Stack, alert: str, since: float) -> list[float]:
    return [at for at in chain.webhook.received(alert, stack.namespace, "firing") if at >= since]


@pytest.fixture(scope="module")
def rehearsal(cluster: Cluster, engine: docker.DockerClient) -> Iterator[Rehearsal]:
    with start_chain(cluster) as chain:
        deployed_at = time.time()
        stacks = _deploy(cluster, engine)
        run = Rehearsal(chain, stacks, deployed_at)
        pool = ThreadPoolExecutor(max_workers=len(stacks))
        verifying: dict[str, Future[Verified]] = {
            name: pool.submit(_verify, cluster, chain, stack) for name, stack in stacks.items()
        }
        core = client.CoreV1Api(cluster.api())
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while time.monotonic() < deadline:
            for stack in stacks.values():
                if stack.killed_at is None and stack.expected_alerts:
                    stack.killed_at = _first_kill(core, stack)
            if all(
                stack.killed_at is not None and _delivered(chain, stack, alert, deployed_at)
                for stack in stacks.values()
                for alert in stack.expected_alerts
            ):
                break
            time.sleep(1)
        _measure(run)
        run.verified = {name: future.result(timeout=360) for name, future in verifying.items()}
        pool.shutdown()
        for name, verified in run.verified.items():
            for row in verified.err.splitlines():
                if row.startswith("verify: kill ") or (row.startswith("verify: ") and "@" in row):
                    line(f"coverage stack={name} | {row.removeprefix('verify: ')}")
            verdict = " ".join(f"{key}={value}" for key, value in verified.lines[-1].items())
            line(f"verify stack={name} code={verified.code} {verdict}")

        for stack in stacks.values():
            if not stack.expected_alerts or stack.name in EXAMINED:
                (pod,) = as_json(core.api_client, core.list_namespaced_pod(stack.namespace))["items"]
                run.logs[stack.name] = core.read_namespaced_pod_log(pod["metadata"]["name"], stack.namespace)
                run.pods[stack.name] = pod

        apps = client.AppsV1Api(cluster.api())
        run.scaled_down_at = time.time()
        for stack in stacks.values():
            name = stack.rendered.exports["deploymentName"]
            apps.patch_namespaced_deployment_scale(name, stack.namespace, {"spec": {"replicas": 0}})
        deadline = time.monotonic() + RESOLUTION_TIMEOUT_S
        while time.monotonic() < deadline and not all(
            chain.webhook.received(entry.alert, stacks[entry.stack].namespace, "resolved")
            and _final_status(run, entry) == "resolved"
            for entry in run.latencies
            if entry.delivered_after_s is not None
        ):
            time.sleep(1)
        for entry in run.latencies:
            resolutions = [
                at
                for at in chain.webhook.received(entry.alert, stacks[entry.stack].namespace, "resolved")
                if at >= run.scaled_down_at
            ]
            if resolutions and _final_status(run, entry) == "resolved":
                entry.resolved_delivered_after_s = resolutions[0] - run.scaled_down_at
            line(
                f"alert={entry.alert} stack={entry.stack} kind={_kind(stacks[entry.stack])}"
                f" scraped_after_s={_seconds(entry.scraped_after_s)} fired_after_s={_seconds(entry.fired_after_s)}"
                f" delivered_after_s={_seconds(entry.delivered_after_s)}"
                f" resolved={'true' if entry.resolved_delivered_after_s is not None else 'false'}"
                f" resolution_delivered_after_s={_seconds(entry.resolved_delivered_after_s)}"
            )
        fact("alert_chain_speed", f"{SPEED} (for:, look-backs, scrape and evaluation intervals, group timings)")
        yield run


def _kind(stack: Stack) -> str:
    settings = STACKS[stack.name]
    return f"{settings.get('processModel', 'single')}/{settings.get('memoryKind', 'anonymous')}"


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f}"


def _final_status(run: Rehearsal, entry: Latency) -> str:
    """The status the webhook last received for the alert."""
    namespace = run.stacks[entry.stack].namespace
    events = [(at, "firing") for at in run.chain.webhook.received(entry.alert, namespace, "firing")]
    events += [(at, "resolved") for at in run.chain.webhook.received(entry.alert, namespace, "resolved")]
    return max(events)[1] if events else "none"


# What shows a kill first in the metrics: the pod's status for a container that died, cAdvisor's count for a worker.
EVIDENCE = {
    "ContainerOOMKilled": (
        'kube_pod_container_status_last_terminated_reason{{namespace="{ns}",reason="OOMKilled"}}',
        'kube_pod_container_status_terminated_reason{{namespace="{ns}",reason="OOMKilled"}}',
    ),
    "ContainerCrashLooping": (
        'kube_pod_container_status_waiting_reason{{namespace="{ns}",reason="CrashLoopBackOff"}}',
    ),
    "ContainerOOMKillWithoutRestart": ('container_oom_events_total{{namespace="{ns}",container!=""}}',),
}


def _measure(run: Rehearsal) -> None:
    for stack in run.stacks.values():
        for alert in stack.expected_alerts | run.chain.webhook.alertnames(stack.namespace):
            kill = stack.killed_at
            if kill is None:
                run.latencies.append(Latency(alert, stack.name, None, None, None))
                continue
            seen = [run.chain.first(selector.format(ns=stack.namespace), kill - 60) for selector in EVIDENCE[alert]]
            scraped = min((at for at in seen if at is not None), default=None)
            fired = run.chain.first(
                f'ALERTS{{alertname="{alert}",alertstate="firing",namespace="{stack.namespace}"}}', kill - 60
            )
            delivered = _delivered(run.chain, stack, alert, kill - 60)
            run.latencies.append(
                Latency(
                    alert,
                    stack.name,
                    None if scraped is None else scraped - kill,
                    None if fired is None else fired - kill,
                    delivered[0] - kill if delivered else None,
                )
            )


def _stages(run: Rehearsal, stack: str, alert: str) -> tuple[float, float, float]:
    """Seconds from the stack's first kill to the first scrape showing it, to firing, to delivery; each must be."""
    entry = next((e for e in run.latencies if e.stack == stack and e.alert == alert), None)
    evidence = [
        run.chain.samples(selector.format(ns=run.stacks[stack].namespace), run.deployed_at)[-3:]
        for selector in EVIDENCE[alert]
    ]
    if entry is None or None in (entry.scraped_after_s, entry.fired_after_s, entry.delivered_after_s):
        raise AssertionError(f"{stack}: {alert} not delivered ({entry}; the series it needs, last samples: {evidence})")
    assert entry.scraped_after_s is not None
    assert entry.fired_after_s is not None
    assert entry.delivered_after_s is not None
    return entry.scraped_after_s, entry.fired_after_s, entry.delivered_after_s


def _within_bounds(stack: str, alert: str, scraped: float, delivered: float) -> None:
    """The evidence scraped within its bound of the kill (where the kill is what it shows), the alert delivered
    within its bound of that scrape; a line either way, so that a run shows how near the bounds it came."""
    bound = _delivery_bound(alert)
    evidence_bound = EVIDENCE_BOUND_S.get(alert)
    line(
        f"alert_bound alert={alert} stack={stack} scraped_after_s={scraped:.1f}"
        f" scraped_bound_s={'none' if evidence_bound is None else f'{evidence_bound + MARGIN_S:.1f}'}"
        f" delivered_after_scrape_s={delivered - scraped:.1f} delivered_bound_s={bound:.1f}"
    )
    if evidence_bound is not None:
        assert scraped <= evidence_bound + MARGIN_S, f"{alert}: the kill showed in a scrape {scraped:.1f} s after it"
    late = delivered - scraped
    assert late <= bound, f"{alert}: delivered {late:.1f} s after the scrape showing the kill (bound {bound:.1f} s)"


def test_cadvisor_labels_the_hogs_container_as_on_a_users_node(rehearsal: Rehearsal) -> None:
    """cAdvisor learns the containers from containerd (at /run/containerd/containerd.sock, where it looks): the series
    carry the container, pod and namespace, as the rules' `container!=""` matchers need."""
    found = rehearsal.chain.samples(
        'container_memory_working_set_bytes{namespace="alerts-healthy",container="oom-killer"}', rehearsal.deployed_at
    )
    assert found, "cAdvisor's series for the hog's container have no container label"


@pytest.mark.parametrize("stack", ["single", "single-tmpfs", "pod-scope"])
def test_the_kill_loop_delivers_oom_killed_then_crash_looping(rehearsal: Rehearsal, stack: str) -> None:
    assert rehearsal.stacks[stack].expected_alerts == {"ContainerOOMKilled", "ContainerCrashLooping"}
    scraped, fired, delivered = _stages(rehearsal, stack, "ContainerOOMKilled")
    looping_delivered = _stages(rehearsal, stack, "ContainerCrashLooping")[2]
    assert delivered < looping_delivered
    # Each stage after the one before; firing no sooner than the rule's `for:` (scaled) after the scrape showing it,
    # and no later than the chain's own timings allow.
    assert 0 <= scraped <= fired <= delivered
    assert fired - scraped >= _for_seconds("ContainerOOMKilled") - SCRAPE_INTERVAL_S
    _within_bounds(stack, "ContainerOOMKilled", scraped, delivered)
    # The crash loop's evidence is the back-off itself (CrashLoopBackOff), which comes a run and a back-off after the
    # first kill: its delivery is bounded from that scrape, not from the kill.
    looping_scraped, looping_fired, _ = _stages(rehearsal, stack, "ContainerCrashLooping")
    assert looping_fired - looping_scraped >= _for_seconds("ContainerCrashLooping") - SCRAPE_INTERVAL_S
    _within_bounds(stack, "ContainerCrashLooping", looping_scraped, looping_delivered)
    assert rehearsal.chain.webhook.alertnames(rehearsal.stacks[stack].namespace) == {
        "ContainerOOMKilled",
        "ContainerCrashLooping",
    }


@pytest.mark.parametrize("stack", ["supervised", "supervised-tmpfs"])
def test_the_supervised_workers_kill_delivers_oom_kill_without_restart(rehearsal: Rehearsal, stack: str) -> None:
    assert rehearsal.stacks[stack].expected_alerts == {"ContainerOOMKillWithoutRestart"}
    scraped, fired, delivered = _stages(rehearsal, stack, "ContainerOOMKillWithoutRestart")
    assert scraped <= fired <= delivered
    assert fired - scraped >= _for_seconds("ContainerOOMKillWithoutRestart") - SCRAPE_INTERVAL_S
    _within_bounds(stack, "ContainerOOMKillWithoutRestart", scraped, delivered)
    assert rehearsal.chain.webhook.alertnames(rehearsal.stacks[stack].namespace) == {"ContainerOOMKillWithoutRestart"}


@pytest.mark.parametrize("stack", ["pagecache", "ceiling", "ceiling-pct", "healthy"])
def test_a_pod_that_holds_delivers_nothing(rehearsal: Rehearsal, stack: str) -> None:
    assert rehearsal.stacks[stack].expected_alerts == set()
    assert rehearsal.chain.webhook.alertnames(rehearsal.stacks[stack].namespace) == set()
    # and it ran the whole window: its container's series are there (a pod that never started would prove nothing)
    namespace = rehearsal.stacks[stack].namespace
    assert (
        rehearsal.chain.first(f'kube_pod_container_status_running{{namespace="{namespace}"}}', rehearsal.deployed_at)
        is not None
    )


def test_a_ceiling_in_percent_holds_the_containers_charge_at_the_percent_asked(rehearsal: Rehearsal) -> None:
    """On the real kubelet, cgroup v1: the hog finds its container's limit and its own start-up charge, and holds
    where the percent asked puts it, within the range its holding line announces (docs/memory-kinds.md)."""
    events = {fields["event"]: fields for fields in map(logfmt.parse, rehearsal.logs["ceiling-pct"].splitlines())}
    start, holding = events["start"], events["holding"]
    pct, limit = int(STACKS["ceiling-pct"]["memoryCeilingPct"]), int(start["limit_mib"])
    asked = limit * pct / 100
    assert (start["ceiling_pct"], holding["ceiling_pct"]) == (str(pct), str(pct))
    assert float(holding["asked_mib"]) == round(asked, 1)
    assert int(holding["allocated_mib"]) == int(start["ceiling_mib"])
    achieved = float(holding["achieved_mib"])
    assert asked - 1 - int(start["reclaimable_mib"]) <= achieved <= asked + 1, (asked, achieved, start)
    verified = rehearsal.verified["ceiling-pct"]
    assert verified.code == verify.EXIT_AS_PREDICTED, verified.lines[-1]
    fact(
        "ceiling_pct",
        f"{pct} asked_mib={holding['asked_mib']} achieved_mib={holding['achieved_mib']} limit_mib={limit} "
        f"allocated_mib={holding['allocated_mib']} start_charge_mib={start['cgroup_usage_mib']} "
        f"reclaimable_mib={start['reclaimable_mib']} cgroup=v1 verdict={verified.lines[-1]['verdict']}",
    )


def test_a_pod_level_limit_is_found_by_the_hog_and_its_kill_reported_as_the_containers(rehearsal: Rehearsal) -> None:
    """limitScope=pod on the real kubelet (1.37, PodLevelResources on by default; cgroup v1): the pod admitted with
    its own resources and none on the container, Guaranteed; the hog reads the pod's limit in its cgroup; the kernel's
    kill at the pod's limit reported as the container's own OOMKilled, 137; make verify judges it as predicted."""
    pod = rehearsal.pods["pod-scope"]
    assert (
        pod["spec"]["resources"]["limits"] == pod["spec"]["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    )
    (container,) = pod["spec"]["containers"]
    assert not container.get("resources", {}).get("limits"), container.get("resources")
    assert pod["status"]["qosClass"] == "Guaranteed"
    (status,) = pod["status"]["containerStatuses"]
    terminated = status["lastState"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    start = next(
        fields for fields in map(logfmt.parse, rehearsal.logs["pod-scope"].splitlines()) if fields["event"] == "start"
    )
    assert (start["limit_mib"], start["limit_scope"], start["limit_source"]) == ("128", "pod", "cgroup")
    verified = rehearsal.verified["pod-scope"]
    assert verified.code == verify.EXIT_AS_PREDICTED, verified.lines[-1]
    fact(
        "limit_scope",
        f"pod verdict={verified.lines[-1]['verdict']} reason={terminated['reason']} exit_code={terminated['exitCode']} "
        f"qos={pod['status']['qosClass']} restarts={status['restartCount']} limit_mib={start['limit_mib']} "
        f"limit_source={start['limit_source']} announced_steps={start['predicted_steps_earliest']}.."
        f"{start['predicted_steps_latest']} cgroup=v1",
    )


def test_after_scale_down_every_delivered_alert_resolves_and_the_resolution_is_delivered(rehearsal: Rehearsal) -> None:
    delivered = [entry for entry in rehearsal.latencies if entry.delivered_after_s is not None]
    assert len(delivered) == 8  # two for each kill loop, one for each supervised stack
    unresolved = [f"{e.stack}/{e.alert}" for e in delivered if e.resolved_delivered_after_s is None]
    assert not unresolved, f"no resolution delivered after replicas=0 for {unresolved}"
    still = [s["metric"] for s in prom.query(rehearsal.chain.prometheus, 'ALERTS{namespace=~"alerts-.*"}')]
    assert not still, f"alerts still pending or firing after the scale-down: {still}"


@pytest.mark.parametrize("stack", list(STACKS))
def test_verify_reports_which_signals_saw_each_kill(rehearsal: Rehearsal, stack: str) -> None:
    verified = rehearsal.verified[stack]
    assert verified.code == verify.EXIT_AS_PREDICTED, (verified.lines[-1], verified.err[-2000:])
    coverage = verified.coverage()
    expected = rehearsal.stacks[stack].expected_alerts
    cases = {case.get("name") for case in verified.junit.iter("testcase")}
    if not expected:
        assert coverage == []  # nothing was killed, so nothing to cover
        return
    assert coverage, "verify saw kills but reported no coverage"
    silent = "ContainerOOMKillWithoutRestart" in expected
    # A tmpfs run's restart may die at start, in a pod its emptyDir still fills (docs/memory-kinds.md): no hog line.
    kinds = (
        {"worker"}
        if silent
        else {"container", "at-start"}
        if STACKS[stack].get("memoryKind") == "tmpfs"
        else {"container"}
    )
    for row in coverage:
        assert row["kind"] in kinds
        # the signals made for this kind of kill saw every one of them, through to Alertmanager
        made_for = ["cadvisor"] if silent else ["pod_status", "kube_state_metrics"]
        made_for += [] if row["kind"] == "at-start" else ["hog_line"]
        for alert in expected:
            made_for += [f"alert_{alert}", f"delivered_{alert}"]
        assert {name: row[name] for name in made_for} == dict.fromkeys(made_for, "yes"), row
        # and what is not made for it did not claim it: a worker's kill leaves the pod's status alone
        if silent:
            assert row["pod_status"] == row["kube_state_metrics"] == "no"
    for detector in ("pod_status", "kubelet_event", "kube_state_metrics", "cadvisor", "hog_line"):
        assert f"detector {detector}" in cases  # JUnit: a case per detector
    assert "every kill seen by the monitoring" in cases


def test_the_supervised_stack_s_report_judges_again_and_shows_each_kill_and_alert(rehearsal: Rehearsal) -> None:
    """verify --report and --save beside the alert chain: --from gives the same verdict and exit code, and the page in
    chromium draws each worker's steps and a mark per worker kill (tests/report_check.py); a screenshot is kept."""
    verified = rehearsal.verified[REPORTED]
    where = report_check.REPORTS / f"alert-chain-{REPORTED}"
    fact("report_alert_chain", report_check.check(where, verified.code, verified.lines[-1]))
    page = (where / "report.html").read_text()
    for what in ("alert fired", "alert delivered"):  # each expected alert's firing, and its delivery, in the timeline
        named = re.findall(f'data-what="{what}"><td>[^<]*</td><td>{what}</td><td>([^<]+)</td>', page)
        assert set(rehearsal.stacks[REPORTED].expected_alerts) <= set(named), (what, named)
