"""verify's clients for its detectors, against the real servers on loopback: Debian's Alertmanager
(`prometheus-alertmanager`) for the alerts it holds for a namespace, their state and receivers, and its version; and
Debian's Prometheus for a selector's raw samples over a window (`alerts.samples`), scraping an exporter of the test's
own that counts its scrapes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from oomtools import alert_client as prom
from oomtools.verify.detectors import Delivery
from tests.servers import alertmanager_argv, free_port, prometheus_argv
from tests.support import tool_on_path

SHOP_POD = {"namespace": "shop", "pod": "web-6f7d-abc", "container": "web"}
OTHER_POD = {"namespace": "other", "pod": "api-5b8c-xyz", "container": "api"}
RECEIVER = "memory-kills"


def post(url: str, body: Any) -> Any:
    request = urllib.request.Request(  # noqa: S310 (the test's own loopback server)
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        text = response.read()
    return json.loads(text) if text.strip() else None


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(150):
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"not ready in 15 s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def running(argv: list[str], url: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The server argv starts, its output in log_path, once url answers ready; stopped after."""
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, process, log_path)
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---------------------------------------------------------------------------------------------------------------
# Alertmanager


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Alertmanager on a free loopback port, without gossip: the namespace "shop" routed to a webhook receiver
    (whose URL nothing listens on: notifications fail, which is not what verify reads), the rest to a receiver
    with no integration. Its URL and the binary's path."""
    binary = tool_on_path("prometheus-alertmanager", "prometheus-alertmanager")
    port = free_port()
    (tmp_path / "alertmanager.yml").write_text(
        "route:\n"
        "  receiver: nowhere\n"
        "  group_by: [alertname, namespace]\n"
        "  routes:\n"
        f"    - receiver: {RECEIVER}\n"
        "      matchers: ['namespace=\"shop\"']\n"
        "receivers:\n"
        "  - name: nowhere\n"
        f"  - name: {RECEIVER}\n"
        "    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{free_port()}/hook\n"
    )
    url = f"http://127.0.0.1:{port}"
    argv = alertmanager_argv(binary, tmp_path / "alertmanager.yml", tmp_path / "data", port)
    with running(argv, url, tmp_path / "alertmanager.log"):
        yield url, binary


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_alertmanager_alerts_are_the_namespaces_with_their_state_and_receivers(alertmanager: tuple[str, str]) -> None:
    url, _ = alertmanager
    now = datetime.datetime.now(datetime.UTC)
    post(
        f"{url}/api/v2/alerts",
        [
            {
                "labels": {"alertname": name, **pod, "severity": "warning"},
                "annotations": {"summary": f"{name} (a test's)"},
                "startsAt": iso(now - datetime.timedelta(seconds=30)),
            }
            for name, pod in (
                ("ContainerOOMKilled", SHOP_POD),
                ("ContainerOOMKilled", OTHER_POD),
                ("ContainerCrashLooping", SHOP_POD),
            )
        ],
    )
    silence = post(
        f"{url}/api/v2/silences",
        {
            "matchers": [
                {"name": "alertname", "value": "ContainerCrashLooping", "isRegex": False, "isEqual": True},
                {"name": "namespace", "value": "shop", "isRegex": False, "isEqual": True},
            ],
            "startsAt": iso(now - datetime.timedelta(minutes=1)),
            "endsAt": iso(now + datetime.timedelta(hours=1)),
            "createdBy": "test_alertmanager_client",
            "comment": "a known crash loop",
        },
    )
    assert silence["silenceID"]

    deadline = time.monotonic() + 10
    while True:
        held = prom.alertmanager_alerts(url, "shop")
        by_name = {alert.labels["alertname"]: alert for alert in held}
        if len(held) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(by_name) == ["ContainerCrashLooping", "ContainerOOMKilled"], held
    assert all(alert.labels["namespace"] == "shop" for alert in held)  # not the other namespace's
    oom_killed, crash_looping = by_name["ContainerOOMKilled"], by_name["ContainerCrashLooping"]
    assert oom_killed.labels == {"alertname": "ContainerOOMKilled", **SHOP_POD, "severity": "warning"}
    assert oom_killed.state == "active"
    assert oom_killed.receivers == (RECEIVER,)
    assert crash_looping.state == "suppressed"  # silenced, still routed to its receiver
    assert crash_looping.receivers == (RECEIVER,)
    (other,) = prom.alertmanager_alerts(url, "other")
    assert other.state == "active"
    assert other.receivers == ("nowhere",)
    assert prom.alertmanager_alerts(url, "nobody") == []
    # What verify makes of them: held for the receivers, the silenced one not.
    delivery = Delivery()
    assert delivery.record(held, time.time()) == [("ContainerOOMKilled", "web-6f7d-abc", "web", (RECEIVER,))]
    assert delivery.holds("ContainerOOMKilled")
    assert not delivery.holds("ContainerCrashLooping")


def test_alertmanager_version_is_the_binarys(alertmanager: tuple[str, str]) -> None:
    url, binary = alertmanager
    version = prom.alertmanager_version(url)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version), version
    said = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    assert f"version {version} " in said.stdout + said.stderr


class NotAlertmanager:
    """An HTTP server that answers every GET with 200 and the body given: what a wrong URL may reach."""

    def __init__(self, body: bytes, content_type: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Grafana</body></html>", "text/html"),
        (b'{"status": "success", "data": {"alerts": []}}', "application/json"),  # Prometheus' API, say
        (b'"ok"', "application/json"),
    ],
)
def test_an_answer_that_is_not_alertmanagers_is_unreachable_in_one_line(body: bytes, content_type: str) -> None:
    server = NotAlertmanager(body, content_type)
    try:
        for call in (
            lambda: prom.alertmanager_alerts(server.url, "shop"),
            lambda: prom.alertmanager_version(server.url),
        ):
            with pytest.raises(prom.AlertmanagerUnreachable) as raised:
                call()
            message = str(raised.value)
            assert "\n" not in message
            assert message.startswith(server.url), message
    finally:
        server.server.shutdown()
        server.server.server_close()


def test_an_unreachable_alertmanager_is_said_so_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for call in (lambda: prom.alertmanager_alerts(url, "shop"), lambda: prom.alertmanager_version(url)):
        with pytest.raises(prom.AlertmanagerUnreachable) as raised:
            call()
        message = str(raised.value)
        assert "\n" not in message
        assert message.startswith(url), message
    with pytest.raises(prom.AlertmanagerUnreachable, match="not an http"):
        prom.alertmanager_version("file:///etc/passwd")


# ---------------------------------------------------------------------------------------------------------------
# Prometheus' raw samples


class CountingExporter:
    """`verify_client_scrapes{pod="a"}`: how many scrapes it has answered, this one included (pod "b": the same plus
    1000); when each scrape came, as the exporter's clock says."""

    def __init__(self) -> None:
        self.scraped_at: list[float] = []
        exporter = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    exporter.scraped_at.append(time.time())
                    count = len(exporter.scraped_at)
                body = f'verify_client_scrapes{{pod="a"}} {count}\nverify_client_scrapes{{pod="b"}} {count + 1000}\n'
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, CountingExporter]]:
    """Prometheus scraping the counting exporter twice a second, once it has scraped it ten times."""
    binary = tool_on_path("prometheus", "prometheus")
    exporter = CountingExporter()
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 500ms}\n"
        f"scrape_configs: [{{job_name: counting, static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]}}]\n"
    )
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    argv = prometheus_argv(binary, tmp_path / "prometheus.yml", tmp_path / "data", port)
    try:
        with running(argv, url, log_path) as process:
            for _ in range(200):
                if len(exporter.scraped_at) >= 10:
                    break
                assert process.poll() is None, log_path.read_text()[-2000:]
                time.sleep(0.1)
            else:
                pytest.fail("Prometheus never scraped the exporter ten times")
            yield url, exporter
    finally:
        exporter.server.shutdown()
        exporter.server.server_close()


def test_samples_are_the_raw_scrapes_of_the_selected_series_in_the_window_oldest_first(
    prometheus: tuple[str, CountingExporter],
) -> None:
    url, exporter = prometheus
    scraped = list(exporter.scraped_at)
    # A window of whole seconds, ending before the last scrape (whose sample may not be stored yet); the exporter's
    # clock and Prometheus' stamp on a scrape differ by milliseconds: 0.1 s of slack at either end.
    until = float(math.floor(scraped[-2]))
    since = until - 3
    (series,) = prom.samples(url, 'verify_client_scrapes{pod="a"}', since, until)
    labels, points = series
    assert labels["__name__"] == "verify_client_scrapes"
    assert labels["pod"] == "a"
    assert labels["job"] == "counting"
    stamps, values = [t for t, _ in points], [v for _, v in points]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    assert all(since <= t <= until for t in stamps), (since, until, stamps)
    # raw: each sample is one scrape, at the time it came (a resampled query_range would repeat or skip counts)
    assert values == [values[0] + n for n in range(len(values))], values
    for stamp, value in points:
        assert abs(scraped[int(value) - 1] - stamp) < 0.1, (stamp, value, scraped)
    inside = [n + 1 for n, t in enumerate(scraped) if since + 0.1 <= t <= until - 0.1]
    assert set(inside) <= set(values), (inside, values)
    assert len(values) >= 5
    # the other series, by its matcher; none for a pod that has none, or before the first scrape
    ((other_labels, other_points),) = prom.samples(url, 'verify_client_scrapes{pod="b"}', since, until)
    assert other_labels["pod"] == "b"
    assert [v - 1000 for _, v in other_points] == values
    assert prom.samples(url, 'verify_client_scrapes{pod="c"}', since, until) == []
    assert prom.samples(url, 'verify_client_scrapes{pod="a"}', scraped[0] - 100, scraped[0] - 50) == []
