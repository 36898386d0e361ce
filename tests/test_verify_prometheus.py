"""make verify's alert side against a real Prometheus (Debian's `prometheus`, on loopback): it loads the rule file,
scrapes an exporter of this test's own that plays kube-state-metrics' and cAdvisor's series for an OOM kill loop, a
supervised worker's silent kills and a healthy pod, and make verify's Prometheus client watches the alerts fire,
measures their detection latency from the kill, and sees them resolve once the stack's series go (scaled down).

Time runs 12 times faster than the rule file's (for: 1m is 5 s, [10m] is 50 s, the kubelet's back-off a second): the
same rules, every duration in them divided by 12, so the test takes about a minute and a half, not twenty.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infra.monitoring import RULES_FILE
from oomtools import alert_client as prom
from tests.promtime import compress
from tests.servers import free_port, prometheus_argv
from tests.support import require

SPEED = 12
LOOP_PERIOD = 4.0  # a kill every 4 s: killed, 1 s back-off, restarted, killed 3 s later
WORKER_KILLS = (2.0, 6.0)
SCALED_DOWN_AT = 40.0
LOOP, WORKERS, HEALTHY = "oom-killer", "workers", "shop"


def test_compress_divides_every_duration_and_nothing_else() -> None:
    rules = RULES_FILE.read_text()
    fast = compress(rules, SPEED)
    for duration in ("for: 5000ms", "for: 25000ms", "[50000ms]", "[25000ms]"):
        assert duration in fast
    assert not re.search(r"for: \d+m\s|\[\d+m\]", fast)
    assert len(fast.splitlines()) == len(rules.splitlines())


def series(name: str, labels: dict[str, str], value: float) -> str:
    text = ",".join(f'{key}="{val}"' for key, val in labels.items())
    return f"{name}{{{text}}} {value:g}"


def timeline(t: float) -> list[str]:
    """What kube-state-metrics and the kubelet's cAdvisor expose t seconds into the story (before it, t < 0, the
    loop's container and the worker run, not yet killed)."""
    lines: list[str] = []
    if t < 0:
        pod = {"namespace": LOOP, "pod": "oom-killer-7d9f-x2m", "container": "oom-killer", "uid": "u1"}
        lines.append(series("kube_pod_container_status_restarts_total", pod, 0))
        lines.append(series("kube_pod_container_status_running", pod, 1))
        worker = {"namespace": WORKERS, "pod": "queue-5c4b-k8s", "container": "worker", "uid": "u2"}
        lines.append(series("kube_pod_container_status_restarts_total", worker, 0))
        lines.append(series("kube_pod_container_status_running", worker, 1))
    elif t < SCALED_DOWN_AT:
        # The kill loop: one container instance per cycle; killed at the cycle's start, restarted a second later.
        pod = {"namespace": LOOP, "pod": "oom-killer-7d9f-x2m", "container": "oom-killer", "uid": "u1"}
        cycle = int(t // LOOP_PERIOD)
        backing_off = t - cycle * LOOP_PERIOD < 1.0
        restarts = cycle + (0 if backing_off else 1)
        lines.append(series("kube_pod_container_status_restarts_total", pod, restarts))
        lines.append(series("kube_pod_container_status_running", pod, 0 if backing_off else 1))
        if backing_off and cycle == 0:
            lines.append(series("kube_pod_container_status_terminated_reason", {**pod, "reason": "OOMKilled"}, 1))
        if backing_off and cycle > 0:
            lines.append(series("kube_pod_container_status_waiting_reason", {**pod, "reason": "CrashLoopBackOff"}, 1))
        if restarts > 0:
            lines.append(series("kube_pod_container_status_last_terminated_reason", {**pod, "reason": "OOMKilled"}, 1))
        # cAdvisor: the running instance at 0, the one just killed at 1 until its cgroup goes
        instance = {**pod, "id": f"/kubepods/pod-u1/c{cycle}", "name": f"c{cycle}", "image": "oom-killer:1"}
        del instance["uid"]
        lines.append(series("container_oom_events_total", instance, 1 if backing_off and cycle > 0 else 0))
        # The supervised worker: the container runs on, the kernel kills its worker twice.
        worker = {"namespace": WORKERS, "pod": "queue-5c4b-k8s", "container": "worker", "uid": "u2"}
        lines.append(series("kube_pod_container_status_restarts_total", worker, 0))
        lines.append(series("kube_pod_container_status_running", worker, 1))
        kills = sum(t >= at for at in WORKER_KILLS)
        cadvisor = {"namespace": WORKERS, "pod": "queue-5c4b-k8s", "container": "worker", "id": "/kubepods/w1"}
        lines.append(series("container_oom_events_total", cadvisor, kills))
    # A healthy pod, OOM-killed once long ago, all along.
    healthy = {"namespace": HEALTHY, "pod": "web-6f7d-abc", "container": "web", "uid": "u3"}
    lines.append(series("kube_pod_container_status_restarts_total", healthy, 2))
    lines.append(series("kube_pod_container_status_running", healthy, 1))
    lines.append(series("kube_pod_container_status_last_terminated_reason", {**healthy, "reason": "OOMKilled"}, 1))
    lines.append(series("container_oom_events_total", {**healthy, "id": "/kubepods/h1"}, 0))
    return lines


class Exporter:
    def __init__(self) -> None:
        self.started = float("inf")  # the story starts once Prometheus scrapes (start())
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = ("\n".join(timeline(time.time() - exporter.started)) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def start(self) -> None:
        self.started = time.time()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Exporter]]:
    binary = shutil.which("prometheus")
    require(binary is not None, "no prometheus on PATH (Debian: apt-get install prometheus)")
    assert binary is not None
    (tmp_path / "rules.yaml").write_text(compress(RULES_FILE.read_text(), SPEED))
    port = free_port()
    exporter = Exporter()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yaml]\n"
        f"scrape_configs: [{{job_name: timeline, static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]}}]\n"
    )
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        prometheus_argv(binary, tmp_path / "prometheus.yml", tmp_path / "data", port),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Ready, and scraping the exporter's "before": only then does the story (the first kill) start.
        for _ in range(150):
            try:
                if prom.query(url, 'kube_pod_container_status_running{namespace="workers"}'):
                    break
            except prom.PrometheusUnreachable:
                assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("Prometheus never scraped the exporter")
        exporter.start()
        yield url, exporter
    finally:
        process.terminate()
        process.wait(timeout=30)
        exporter.server.shutdown()
        log.close()


def test_an_unreachable_prometheus_is_said_so() -> None:
    with pytest.raises(prom.PrometheusUnreachable):
        prom.check_reachable(f"http://127.0.0.1:{free_port()}")


@pytest.mark.timeout(240)
def test_the_alerts_fire_as_predicted_with_their_latency_and_resolve_after_scale_down(
    prometheus: tuple[str, Exporter], record_property: Callable[[str, object], None]
) -> None:
    url, exporter = prometheus
    assert set(prom.DEFAULT_ALERTS) <= prom.rule_names(url)
    names = prom.DEFAULT_ALERTS
    loop = {name: prom.AlertRecord(name, expected=name != "ContainerOOMKillWithoutRestart") for name in names}
    workers = {name: prom.AlertRecord(name, expected=name == "ContainerOOMKillWithoutRestart") for name in names}
    healthy = {name: prom.AlertRecord(name, expected=False) for name in names}
    watched = ((LOOP, loop), (WORKERS, workers), (HEALTHY, healthy))
    scaled_down = exporter.started + SCALED_DOWN_AT
    deadline = scaled_down + 45
    while time.time() < deadline:
        now = time.time()
        for namespace, records in watched:
            active = prom.firing(url, names, namespace)
            for name, record in records.items():
                record.observe(bool(active[name]), now)
        fired = [r for _, records in watched for r in records.values() if r.fired_at is not None]
        if now > scaled_down and fired and all(r.resolved_at is not None for r in fired):
            break
        time.sleep(0.5)

    kill_at = exporter.started  # the loop's first kill
    oom_killed = loop["ContainerOOMKilled"].latency(kill_at)
    crash_looping = loop["ContainerCrashLooping"].latency(kill_at)
    silent = workers["ContainerOOMKillWithoutRestart"].latency(exporter.started + WORKER_KILLS[0])
    for name, value in (
        ("ContainerOOMKilled", oom_killed),
        ("ContainerCrashLooping", crash_looping),
        ("ContainerOOMKillWithoutRestart", silent),
    ):
        record_property(f"latency {name}", value)
        print(f"latency {name}={value} s (rules at {SPEED}x speed, scrape and evaluation every second)")
    # each fires where it should, after its `for` (5 s, 25 s, 5 s here) plus at most a scrape, an evaluation and
    # a poll or two; and stays quiet where it should not
    assert oom_killed is not None
    assert 5 <= oom_killed <= 10
    assert crash_looping is not None
    assert 4 + 25 <= crash_looping <= 4 + 25 + 6  # the back-off is seen from the second kill (4 s) on
    assert silent is not None
    assert 5 <= silent <= 10
    for _namespace, records in watched:
        for record in records.values():
            assert record.as_predicted, (_namespace, record)
    # ... and resolve once the stack's series go: at once where they need the pod, after the 5-minute look-back
    # (25 s here) for the crash loop
    for record in (loop["ContainerOOMKilled"], workers["ContainerOOMKillWithoutRestart"]):
        assert record.resolved_at is not None, record
        assert record.resolved_at - scaled_down <= 5, record
    crash = loop["ContainerCrashLooping"]
    assert crash.resolved_at is not None, crash
    assert crash.resolved_at - scaled_down <= 25 + 6, crash
