"""The user's own commands, run for real: the Pulumi CLI and its plugins (built from their Go modules) against the
test cluster, with a local state backend in a temporary folder.

The project is copied to a temporary folder (its stack files get written to), with the project's virtualenv.
The docker provider plugin is not built here (its module is not served to these machines), so the stack runs a
prebuilt image (`pulumi config set image`): the one the dev stack builds, loaded into the node as kind loads it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.conftest import PROJECT, require
from tests.e2e.cluster import BIN, Cluster, as_json
from tests.e2e.conftest import Deployed, fact
from workload import logfmt

pytestmark = pytest.mark.e2e

STACK = "dev"
NAMESPACE = "oom-killer-pulumi"  # the deployed fixture's objects already hold the dev stack's own namespace
PROJECT_FILES = (
    "Pulumi.yaml",
    "Pulumi.dev.yaml",
    "__main__.py",
    "Dockerfile",
    ".dockerignore",
    "requirements.txt",
    "Makefile",
)
PROJECT_DIRS = ("infra", "workload", "alerts")
PLUGINS = ("pulumi", "pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-kubernetes")
ROLLOUT_TIMEOUT = 180.0


@dataclass
class Pulumi:
    project: Path
    env: dict[str, str]
    api: Any

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["pulumi", *args], cwd=self.project, env=self.env, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            pytest.fail(f"pulumi {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def make(self, target: str) -> subprocess.CompletedProcess[str]:
        """A make target as the README gives it; PULUMI_SKIP_CONFIRMATIONS answers the one prompt (--yes)."""
        result = subprocess.run(
            ["make", target],
            cwd=self.project,
            env={**self.env, "PULUMI_SKIP_CONFIRMATIONS": "true"},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"make {target} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def deployment(self) -> dict[str, Any]:
        apps = client.AppsV1Api(self.api)
        return as_json(self.api, apps.read_namespaced_deployment("oom-killer", NAMESPACE))


@pytest.fixture(scope="module")
def pulumi(cluster: Cluster, deployed: Deployed, tmp_path_factory: pytest.TempPathFactory) -> Pulumi:
    missing = [name for name in PLUGINS if not (BIN / name).exists()]
    require(not missing, f"not built: {missing} (tests/e2e/builds/build.sh)")
    require((PROJECT / "venv" / "bin" / "python").exists(), "no ./venv (make test makes it)")
    work = tmp_path_factory.mktemp("pulumi")
    project = work / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(PROJECT / name, project / name)
    for name in PROJECT_DIRS:
        shutil.copytree(PROJECT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "venv").symlink_to(PROJECT / "venv")  # Pulumi.yaml's runtime virtualenv
    # make test installed requirements-dev.txt, which includes requirements.txt: what make up would install
    installed = PROJECT / "venv" / "bin" / ".installed"
    require(installed.exists(), "./venv was not made by make (no venv/bin/.installed)")
    (PROJECT / "venv" / "bin" / ".program-installed").touch()
    env = {
        **os.environ,
        # Only what was built here: the CLI takes plugins from PATH and must download nothing.
        "PATH": f"{BIN}:{PROJECT / 'venv' / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
        "PULUMI_HOME": str(work / "home"),
        "PULUMI_BACKEND_URL": f"file://{work / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "oom-killer-e2e",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    (work / "state").mkdir()
    return Pulumi(project, env, deployed.api)


def _wait_for_pod_logging(pulumi: Pulumi, increment_mib: int) -> dict[str, str]:
    """The start line of a pod of the stack's Deployment whose workload says it steps by `increment_mib`."""
    core = client.CoreV1Api(pulumi.api)
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    while time.monotonic() < deadline:
        for pod in as_json(pulumi.api, core.list_namespaced_pod(NAMESPACE))["items"]:
            try:
                log = core.read_namespaced_pod_log(pod["metadata"]["name"], NAMESPACE)
            except ApiException:
                continue  # not started yet
            for line in log.splitlines():
                fields = logfmt.parse(line)
                if fields.get("event") == "start" and fields.get("increment_mib") == str(increment_mib):
                    return fields
        time.sleep(1)
    pytest.fail(f"no pod said increment_mib={increment_mib} within {ROLLOUT_TIMEOUT:.0f} s")


def _oom_killed(pulumi: Pulumi) -> dict[str, Any]:
    core = client.CoreV1Api(pulumi.api)
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    while time.monotonic() < deadline:
        pods = as_json(pulumi.api, core.list_namespaced_pod(NAMESPACE))["items"]
        for pod in pods:
            for status in pod.get("status", {}).get("containerStatuses", []):
                terminated = status.get("lastState", {}).get("terminated") or {}
                if terminated.get("reason") == "OOMKilled":
                    return dict(terminated)
        time.sleep(1)
    pytest.fail(f"the stack's pod was not OOM-killed within {ROLLOUT_TIMEOUT:.0f} s")


def test_the_users_commands_deploy_change_refuse_and_destroy(pulumi: Pulumi, deployed: Deployed) -> None:
    version = pulumi.run("version").stdout.strip()
    fact("pulumi", version)
    image = str(deployed.rendered.exports["image"])

    # make up (README), with a prebuilt image and a namespace of this test's own set in the dev stack first
    pulumi.run("stack", "select", "--create", STACK)
    pulumi.run("config", "set", "image", image)
    pulumi.run("config", "set", "namespace", NAMESPACE)
    started = time.monotonic()
    pulumi.make("up")
    up_seconds = time.monotonic() - started
    outputs = json.loads(pulumi.run("stack", "output", "--json").stdout)
    assert outputs["namespace"] == NAMESPACE
    assert outputs["image"] == image
    assert outputs["predictedSecondsToOomKill"] == deployed.rendered.exports["predictedSecondsToOomKill"]
    core = client.CoreV1Api(pulumi.api)
    assert core.read_namespace(NAMESPACE)
    assert client.CoreV1Api(pulumi.api).list_namespaced_limit_range(NAMESPACE).items
    assert client.NetworkingV1Api(pulumi.api).list_namespaced_network_policy(NAMESPACE).items
    # skipAwait: pulumi up returns without waiting for a pod that will never be ready
    assert up_seconds < 60, f"pulumi up took {up_seconds:.0f} s"
    terminated = _oom_killed(pulumi)
    assert terminated["exitCode"] == 137
    fact("pulumi_up", f"ok seconds={up_seconds:.1f}")

    # pulumi config set memoryIncrementMb 30; pulumi up: a rollout with the new pace
    pulumi.run("config", "set", "memoryIncrementMb", "30")
    pulumi.run("up", "--yes", "--stack", STACK)
    container = pulumi.deployment()["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MEMORY_INCREMENT_MB"] == "30"
    start = _wait_for_pod_logging(pulumi, 30)
    fact("config_set_rollout", f"ok memory_increment_mb={start['increment_mib']}")

    # nothing changed: no change, no rollout
    generation = pulumi.deployment()["metadata"]["generation"]
    pulumi.run("preview", "--expect-no-changes", "--stack", STACK)
    pulumi.run("up", "--yes", "--expect-no-changes", "--stack", STACK)
    assert pulumi.deployment()["metadata"]["generation"] == generation
    fact("no_change_no_rollout", "ok")

    # a bad value: one line naming the key and the value, and nothing changed in the cluster
    pulumi.run("config", "set", "memoryIncrementMb", "0")
    refused = pulumi.run("up", "--yes", "--stack", STACK, check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "invalid config oom-killer:memoryIncrementMb=0: " in said, said
    assert "Traceback" not in said, said
    assert pulumi.deployment()["metadata"]["generation"] == generation
    pulumi.run("config", "set", "memoryIncrementMb", "30")
    # a typo'd key: Pulumi passes undeclared keys through to the program, which refuses them (README)
    pulumi.run("config", "set", "memoryIncremntMb", "30")
    typo = pulumi.run("up", "--yes", "--stack", STACK, check=False)
    assert typo.returncode != 0
    assert "invalid config oom-killer:memoryIncremntMb=" in typo.stdout + typo.stderr, typo.stdout + typo.stderr
    assert pulumi.deployment()["metadata"]["generation"] == generation
    pulumi.run("config", "rm", "memoryIncremntMb")
    fact("bad_config_refused", "ok unknown_key_refused=true")

    # a local backend's passphrase salts the stack file, as the README warns
    assert "encryptionsalt:" in (pulumi.project / f"Pulumi.{STACK}.yaml").read_text()

    # make destroy (pulumi destroy): the namespace and all in it are gone, and the stack holds nothing
    pulumi.make("destroy")
    deadline = time.monotonic() + 120
    gone = False
    while time.monotonic() < deadline and not gone:
        try:
            core.read_namespace(NAMESPACE)
            time.sleep(1)
        except ApiException as error:
            gone = error.status == 404
    assert gone, f"namespace {NAMESPACE} still there after pulumi destroy"
    state = json.loads(pulumi.run("stack", "export", "--stack", STACK).stdout)
    assert not state["deployment"].get("resources"), state["deployment"].get("resources")
    fact("pulumi_destroy", "ok namespace_gone=true")
