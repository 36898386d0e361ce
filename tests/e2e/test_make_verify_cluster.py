"""make verify against the real cluster: the kubelet's own pod statuses for the dev stack's OOM kill loop."""

from __future__ import annotations

import datetime
import io
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from oomtools import verify
from tests import report_check
from tests.e2e.cluster import Cluster, as_json
from tests.e2e.support import Deployed, fact
from workload import logfmt

pytestmark = pytest.mark.e2e


def outputs_file(tmp_path: Path, deployed: Deployed, **overrides: Any) -> Path:
    """The stack's outputs as `pulumi stack output --json` gives them (here: as the program exported them)."""
    exports = deployed.rendered.exports
    outputs = {
        "namespace": deployed.namespace,
        "deploymentName": exports["deploymentName"],
        "predictedSecondsToOomKill": exports["predictedSecondsToOomKill"],
        **overrides,
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return path


def run_verify(*args: str) -> tuple[int, list[dict[str, str]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = verify.main(list(args), out=out, err=err)
    return code, [logfmt.parse(line) for line in out.getvalue().splitlines()], err.getvalue()


@pytest.fixture(scope="module")
def fresh_rollout(deployed: Deployed) -> None:
    """Restart the dev stack's pods, as a new `pulumi up` would: make verify watches a stack just deployed, not
    one whose back-off has grown for minutes while the other tests ran."""
    apps = client.AppsV1Api(deployed.api)
    name = str(deployed.rendered.exports["deploymentName"])
    stamp = datetime.datetime.now(datetime.UTC).isoformat()
    patch = {"spec": {"template": {"metadata": {"annotations": {"oom-killer.test/restarted-at": stamp}}}}}
    apps.patch_namespaced_deployment(name, deployed.namespace, patch)
    core = client.CoreV1Api(deployed.api)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = as_json(deployed.api, core.list_namespaced_pod(deployed.namespace, label_selector=deployed.selector))
        annotated = [
            pod
            for pod in pods["items"]
            if pod["metadata"].get("annotations", {}).get("oom-killer.test/restarted-at") == stamp
            and "deletionTimestamp" not in pod["metadata"]
        ]
        if annotated and len(pods["items"]) == len(annotated):
            return
        time.sleep(0.5)
    pytest.fail("the restarted pod did not replace the old one in 120 s")


@pytest.mark.timeout(420)
@pytest.mark.usefixtures("fresh_rollout")
def test_verify_sees_the_dev_stack_killed_as_predicted(cluster: Cluster, deployed: Deployed, tmp_path: Path) -> None:
    junit = tmp_path / "verify.xml"
    reports = report_check.folder("make-verify-single-stack")  # the report, the saved results, a screenshot
    code, lines, err = run_verify(
        *report_check.report_args(reports),
        "--outputs",
        str(outputs_file(tmp_path, deployed)),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--timeout",
        "6m",
        "--kills",
        "2",
        "--junit",
        str(junit),
    )
    verdict = lines[-1]
    fact("verify", " ".join(f"{k}={v}" for k, v in verdict.items()))
    assert code == verify.EXIT_AS_PREDICTED, (lines, err)
    assert verdict["verdict"] == "as-predicted"
    deaths = [line for line in lines if line.get("event") == "death"]
    assert len(deaths) >= 2
    for death in deaths:
        assert death["reason"] == "OOMKilled"
        assert death["exit_code"] == "137"
        assert "allocated_mib=" in death["termination_message"]  # the workload's last step, as the kubelet kept it
    restarts = [line for line in lines if line.get("event") == "restart"]
    assert restarts
    assert all(float(line["back_off_seconds"]) >= 0 for line in restarts)
    suite = ET.parse(junit).getroot()  # noqa: S314 (the report this test had written)
    assert suite.get("failures") == "0"
    assert int(suite.get("tests", "0")) >= 4
    # verify --from on the saved results: the same verdict and exit code; the page in chromium, a screenshot kept
    fact("report", report_check.check(reports, code, verdict))


@pytest.mark.usefixtures("fresh_rollout")
def test_verify_says_so_when_the_prediction_is_wrong(cluster: Cluster, deployed: Deployed, tmp_path: Path) -> None:
    # A prediction of a kill a minute after the start: the kubelet's statuses say ~7 s, so not as predicted.
    outputs = outputs_file(tmp_path, deployed, predictedSecondsToOomKill={"earliest": 60, "latest": 60})
    code, lines, err = run_verify(
        "--outputs", str(outputs), "--kubeconfig", str(cluster.kubeconfig), "--timeout", "3m", "--kills", "1"
    )
    assert code == verify.EXIT_NOT_AS_PREDICTED, (lines, err)
    assert lines[-1]["verdict"] == "not-as-predicted"
    assert "each kill on time" in lines[-1]["failed"]


def test_verify_says_so_when_the_stack_is_not_there(cluster: Cluster, deployed: Deployed, tmp_path: Path) -> None:
    outputs = outputs_file(tmp_path, deployed, deploymentName="not-deployed")
    code, _lines, err = run_verify("--outputs", str(outputs), "--kubeconfig", str(cluster.kubeconfig))
    assert code == verify.EXIT_BAD_ARGUMENTS
    assert "no deployment" in err
