"""The user's commands and the cluster under failure, with the real CLI on the real cluster: a `pulumi up`
interrupted by Ctrl-C and by a kill, drift made behind Pulumi's back, and a control plane that goes away during an
update. Each time: what the user sees, that the stack's state stays usable, and that the next command converges
(`pulumi preview --expect-no-changes` passes after it).

One stack for the module, deployed once; each test changes it as a user would (a config value, an edit under
workload/) and interrupts or disturbs the update that follows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from kubernetes import client

from oomtools import verify
from tests.e2e.cluster import Cluster, as_json
from tests.e2e.pulumi_cli import Pulumi, project_with_cli, session_processes
from tests.e2e.support import fact, workload_archive

pytestmark = pytest.mark.e2e

STACK = "faults"
NAMESPACE = "oom-killer-faults"
IMAGE_RESOURCE = "workload-image"  # infra/image.py: the docker provider's build
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
CHANGED = Path("workload") / "__init__.py"


@dataclass
class Running:
    """A CLI command started in its own process group (as a terminal runs a foreground job), its output collected
    line by line as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None
    killed_at: float = 0.0

    def wait_for(self, wanted: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for text in self.lines[seen:]:
                if wanted(text):
                    return text
            seen = len(self.lines)
            if self.process.poll() is not None and self.reader is not None and not self.reader.is_alive():
                break
            time.sleep(0.1)
        pytest.fail(f"the line waited for did not come in {timeout:.0f} s:\n" + "\n".join(self.lines[-40:]))

    def signal(self, number: int) -> None:
        """To the whole group, as Ctrl-C (SIGINT) does from a terminal, or as a CI runner kills a job (SIGKILL)."""
        self.killed_at = time.monotonic()
        os.killpg(self.process.pid, number)

    def finish(self, timeout: float) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        if self.reader is not None:
            self.reader.join(timeout=10)
        return code, "\n".join(self.lines)


def start(pulumi: Pulumi, *args: str) -> Running:
    process = subprocess.Popen(
        ["pulumi", *args],
        cwd=pulumi.project,
        env=pulumi.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    running = Running(process)

    def read() -> None:
        assert process.stdout is not None
        for text in process.stdout:
            running.lines.append(text.rstrip("\n"))

    running.reader = threading.Thread(target=read, daemon=True)
    running.reader.start()
    return running


def building(text: str) -> bool:
    """The progress line of the image's build under way (the longest step of an update with a changed workload)."""
    return IMAGE_RESOURCE in text and any(word in text for word in ("creating", "updating", "replacing"))


def change_the_workload(pulumi: Pulumi, note: str) -> None:
    path = pulumi.project / CHANGED
    path.write_text(path.read_text() + f"# {note}\n")


def deployment(api: Any) -> dict[str, Any]:
    return as_json(api, client.AppsV1Api(api).read_namespaced_deployment("oom-killer", NAMESPACE))


def env_of(deployed: dict[str, Any]) -> dict[str, str]:
    container = deployed["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def converged(pulumi: Pulumi, increment: str) -> None:
    """The cluster holds what the config says, and Pulumi agrees that nothing is left to do."""
    outputs = pulumi.outputs(STACK)
    live = deployment(pulumi.api)
    assert env_of(live)["MEMORY_INCREMENT_MB"] == increment
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == outputs["image"]
    assert live["spec"]["replicas"] == 1
    namespace = as_json(pulumi.api, client.CoreV1Api(pulumi.api).read_namespace(NAMESPACE))
    assert namespace["metadata"]["labels"][PSA_ENFORCE] == "restricted"
    pulumi.run("preview", "--expect-no-changes", "--stack", STACK)


def said(output: str, *words: str) -> list[str]:
    """The lines of the CLI's output with any of these words, once each: what the user reads."""
    found: list[str] = []
    for text in output.splitlines():
        text = text.strip()
        if any(word in text for word in words) and text not in found:
            found.append(text)
    return found


def make_verify(pulumi: Pulumi, args: str, stack: str = STACK) -> subprocess.CompletedProcess[str]:
    """`make verify STACK=... ARGS="..."` in the project, as the README gives it."""
    return pulumi.make("verify", f"STACK={stack}", f"ARGS={args}", check=False)


def verify_line(result: subprocess.CompletedProcess[str]) -> str:
    """verify's own line on stderr (make adds its `make: *** ... Error N` line after it)."""
    lines = [text for text in result.stderr.splitlines() if text.startswith("verify: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def stack(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Pulumi:
    pulumi = project_with_cli(cluster, tmp_path_factory.mktemp("faults"))
    pulumi.run("stack", "select", "--create", STACK)
    pulumi.run("config", "set", "baseImage", os.environ["BASE_IMAGE"])
    pulumi.run("config", "set", "namespace", NAMESPACE)
    pulumi.run("config", "set", "memoryIncrementMb", "10")
    pulumi.run("up", "--yes", "--stack", STACK)
    converged(pulumi, "10")
    return pulumi


def test_ctrl_c_during_pulumi_up_cancels_it_and_the_next_up_converges(stack: Pulumi) -> None:
    before = stack.outputs(STACK)
    stack.run("config", "set", "memoryIncrementMb", "20")
    change_the_workload(stack, "ctrl-c")
    running = start(stack, "up", "--yes", "--stack", STACK)
    running.wait_for(building, timeout=120)
    running.signal(signal.SIGINT)  # Ctrl-C: the terminal signals the foreground group
    code, output = running.finish(timeout=180)
    # The CLI lets the step under way (the build) finish, starts nothing more, and says so.
    assert code != 0, output
    assert "^C received; cancelling." in output, output
    assert "error: update canceled" in output, output
    assert "Traceback" not in output, output
    assert env_of(deployment(stack.api))["MEMORY_INCREMENT_MB"] == "10", "the cancelled update still rolled out"

    # The state keeps the last finished update's outputs (the display lists them as removed, but they are kept):
    # make verify still finds what is deployed.
    assert stack.outputs(STACK) == before

    stack.run("up", "--yes", "--stack", STACK)
    converged(stack, "20")
    fact(
        "fault_ctrl_c",
        f"ok exit={code} said={json.dumps(said(output, '^C received', 'error: update canceled')[::2])} then=converged",
    )


def test_a_killed_first_pulumi_up_leaves_a_lock_that_pulumi_cancel_removes_and_the_next_up_converges(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The first `pulumi up` of a stack killed (SIGKILL: a CI job killed, a shell closed) while it builds the image:
    its lock stays, and nothing else is in the way once `pulumi cancel` removed it."""
    pulumi = project_with_cli(cluster, tmp_path_factory.mktemp("faults-killed"))
    name = f"{STACK}-killed"
    pulumi.run("stack", "select", "--create", name)
    pulumi.run("config", "set", "baseImage", os.environ["BASE_IMAGE"])
    pulumi.run("config", "set", "namespace", f"{NAMESPACE}-killed")
    change_the_workload(pulumi, "sigkill")  # a build of its own: none cached to finish before the kill
    running = start(pulumi, "up", "--yes", "--stack", name)
    running.wait_for(building, timeout=120)
    running.signal(signal.SIGKILL)
    code, _ = running.finish(timeout=30)
    assert code == -signal.SIGKILL
    # The language host and the providers run in process groups of their own (so that a Ctrl-C reaches the CLI
    # alone): a kill of the CLI's group leaves them running, and they do not end by themselves.
    left = session_processes(running.process.pid)

    locked = pulumi.run("up", "--yes", "--stack", name, check=False)
    said_locked = locked.stdout + locked.stderr
    assert locked.returncode != 0
    assert "error: the stack is currently locked by 1 lock(s)." in said_locked, said_locked
    assert "delete the lock file with `pulumi cancel`" in said_locked, said_locked
    # A first update that never ended left no outputs: make verify says so, in one line.
    unfinished = make_verify(pulumi, "--kills 1 --timeout 30s", name)
    assert unfinished.returncode != 0
    assert "has no outputs: it was never deployed, or its first pulumi up did not finish" in verify_line(unfinished)

    cancelled = pulumi.run("cancel", "--yes", "--stack", name)
    assert f"The currently running update for '{name}' has been canceled!" in cancelled.stdout, cancelled.stdout
    pulumi.run("up", "--yes", "--stack", name)
    pulumi.run("preview", "--expect-no-changes", "--stack", name)
    still = session_processes(running.process.pid)
    for pid in still:
        os.kill(pid, signal.SIGKILL)
    fact(
        "fault_sigkill",
        f"ok said={json.dumps(said(said_locked, 'currently locked'))} then='pulumi cancel; pulumi up' "
        f"plugins_left={','.join(sorted(left.values()))} still_running_after_s="
        f"{time.monotonic() - running.killed_at:.0f}:{len(still)}",
    )


def test_drift_is_shown_after_a_refresh_and_undone_by_pulumi_up(stack: Pulumi) -> None:
    apps, core = client.AppsV1Api(stack.api), client.CoreV1Api(stack.api)
    # As `kubectl scale deployment/oom-killer --replicas=0` and `kubectl label namespace ... enforce-` do it: the
    # scale subresource, a label removed, each under kubectl's field manager.
    apps.patch_namespaced_deployment_scale(
        "oom-killer", NAMESPACE, {"spec": {"replicas": 0}}, field_manager="kubectl-scale"
    )
    core.patch_namespace(NAMESPACE, {"metadata": {"labels": {PSA_ENFORCE: None}}}, field_manager="kubectl-label")
    unseen = stack.run("preview", "--expect-no-changes", "--stack", STACK, check=False)
    assert unseen.returncode == 0, "pulumi preview saw drift without a refresh"
    stack.run("refresh", "--yes", "--stack", STACK)
    shown = stack.run("preview", "--diff", "--stack", STACK).stdout
    assert f'+ {PSA_ENFORCE}: "restricted"' in shown, shown
    assert "replicas: 0 => 1" in shown, shown
    stack.run("up", "--yes", "--stack", STACK)
    converged(stack, "20")

    apps.delete_namespaced_deployment("oom-killer", NAMESPACE)
    stack.run("refresh", "--yes", "--stack", STACK)
    shown = stack.run("preview", "--diff", "--stack", STACK).stdout
    assert "+ kubernetes:apps/v1:Deployment: (create)" in shown, shown
    stack.run("up", "--yes", "--stack", STACK)
    converged(stack, "20")
    fact("fault_drift", "ok scaled_to_0=restored label_removed=restored deleted=restored")


def test_the_control_plane_going_away_during_pulumi_up_fails_it_in_one_line_and_a_retry_converges(
    stack: Pulumi, cluster: Cluster, engine: docker.DockerClient
) -> None:
    stack.run("config", "set", "memoryIncrementMb", "40")
    change_the_workload(stack, "control plane")  # the build comes first: the API server goes while it runs
    running = start(stack, "up", "--yes", "--stack", STACK)
    running.wait_for(building, timeout=120)
    cluster.stop_apiserver()
    try:
        code, output = running.finish(timeout=300)
        unreachable = make_verify(stack, "--kills 1 --timeout 10s")
    finally:
        cluster.start_apiserver()
    assert code != 0, output
    failure = said(output, "configured Kubernetes cluster is unreachable")
    assert failure, output
    assert "Traceback" not in output, output
    assert unreachable.returncode != 0
    said_of_it = [text for text in unreachable.stderr.splitlines() if text.startswith("verify: ")]
    assert len(said_of_it) == 2, unreachable.stderr  # it asked again until the --timeout, said once, then gave up
    retrying, line = said_of_it
    assert retrying == f"{line}; asking again every 2 s until --timeout", unreachable.stderr
    assert re.fullmatch(r"verify: the cluster at https://127\.0\.0\.1:\d+ does not answer: Connection refused", line)
    assert f"verify] Error {verify.EXIT_UNREACHABLE}" in unreachable.stderr, unreachable.stderr

    stack.run("up", "--yes", "--stack", STACK)
    converged(stack, "40")
    cluster.load_image(workload_archive(engine, str(stack.outputs(STACK)["image"])))
    rerun = make_verify(stack, "--kills 1 --timeout 120s")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    verdict = rerun.stdout.strip().splitlines()[-1]
    assert verdict.startswith("verdict=as-predicted"), verdict
    fact("fault_control_plane", f"ok pulumi_said={json.dumps(failure[-1][:160])} verify_said={json.dumps(line[:160])}")


def test_a_second_stack_naming_the_first_stacks_namespace_is_refused_and_changes_nothing(
    stack: Pulumi,
) -> None:
    """Two stacks on one cluster that name the same namespace (docs/troubleshooting.md): the second must not take
    over the first's namespace, which `pulumi destroy` of either would then delete with all it holds."""
    twin = f"{STACK}-twin"
    stack.run("stack", "select", "--create", twin)
    try:
        stack.run("config", "set", "--stack", twin, "baseImage", os.environ["BASE_IMAGE"])
        stack.run("config", "set", "--stack", twin, "namespace", NAMESPACE)
        before = as_json(stack.api, client.CoreV1Api(stack.api).read_namespace(NAMESPACE))["metadata"]
        taken = stack.run("up", "--yes", "--stack", twin, check=False)
        output = taken.stdout + taken.stderr
        after = as_json(stack.api, client.CoreV1Api(stack.api).read_namespace(NAMESPACE))["metadata"]
        assert taken.returncode != 0, output
        # What stops it is the label naming the first stack, which the first stack's field manager owns.
        conflict = "Apply failed with 1 conflict: conflict with"
        assert conflict in output, output
        assert ": .metadata.labels.app.kubernetes.io/instance" in output, output
        assert "Traceback" not in output, output
        assert after.get("labels") == before.get("labels")
        assert after.get("uid") == before.get("uid")
        fact("fault_second_stack_same_namespace", f"refused said={json.dumps(said(output, conflict)[-1][:200])}")
    finally:
        stack.run("stack", "select", STACK)
