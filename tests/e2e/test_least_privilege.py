"""Least privilege (issue 19): the user's commands work with a kubeconfig bound only to infra/rights.yaml, and that
kubeconfig is refused everywhere else.

A cluster admin applies the manifest, for a namespace of the test's own, renamed as docs/rights.md says (its sed).
Three users get client certificates from the cluster's CA, in the deployers', the verifiers' and the resizers' groups.
With the deployer's kubeconfig the real Pulumi CLI runs `pulumi up`, `pulumi preview --refresh --expect-no-changes` and
`pulumi destroy` on a stack with createNamespace=false; with the verifier's, `oom-killer verify` (make verify's
command) watches the pod's OOM kill; with the resizer's, `oom-killer resize` lowers the hog's limit in place. Then
each thing the rights must not allow is tried, and must be a 403 from RBAC itself (its wording, not an admission
plugin's): other namespaces' secrets, a privileged pod, objects the program never declares that Pod Security has
nothing against (a restricted pod, a ConfigMap, a ServiceAccount, a Role), writes to nodes and namespaces, the
verifier's writes, the resizer's writes but its one. tests/test_rights.py holds each role's rules equal to what the
program and make verify need, so an extra grant fails there before it reaches a cluster. One thing
RBAC lets through is stopped by the namespace's Pod Security instead: a Deployment whose pods are privileged.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from kubernetes import client, config, utils
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import NODE, Cluster, as_json
from tests.e2e.harness.control_plane import write_kubeconfig
from tests.e2e.pulumi_cli import Pulumi, project_with_cli, session_processes
from tests.e2e.support import fact, workload_archive
from tests.support import PROJECT
from workload import logfmt

pytestmark = pytest.mark.e2e

STACK = "dev"  # its pace (Pulumi.dev.yaml): a kill 6 to 8 s after the container starts
NAMESPACE = "oom-killer-rights"
DEPLOYERS, VERIFIERS, RESIZERS = "oom-killer-deployers", "oom-killer-verifiers", "oom-killer-resizers"
MANIFEST = PROJECT / "infra" / "rights.yaml"
# docs/rights.md's command for another namespace, with this test's.
RENAME = f"s/oom-killer  # namespace$/{NAMESPACE}  # namespace/"
OOM_TIMEOUT = 90.0
POD_SECURITY_TIMEOUT = 60.0
GONE_TIMEOUT = 60.0
WORKLOAD = "oom-killer"
ONLY_FOR = "oom-killer.io/only-for"
COMMAND_TIMEOUT = 120.0  # a command the rights leave waiting (an informer refused its list) fails here, not in 10 min


@dataclass
class Users:
    deployer: Path  # kubeconfigs
    verifier: Path
    resizer: Path
    admin: Any  # API clients
    deployer_api: Any
    verifier_api: Any
    resizer_api: Any


def _user(cluster: Cluster, stem: str, group: str) -> tuple[Path, Any]:
    """A client certificate from the cluster's CA for a user in `group`, its kubeconfig and an API client."""
    assert cluster.authority is not None
    cluster.authority.issue(stem, f"{stem}-e2e", group)
    kubeconfig = cluster.workdir / f"{stem}.kubeconfig"
    write_kubeconfig(kubeconfig, cluster.server, cluster.pki, stem)
    return kubeconfig, config.new_client_from_config(str(kubeconfig))


@pytest.fixture(scope="module")
def users(cluster: Cluster) -> Iterator[Users]:
    """The manifest applied by the admin for NAMESPACE, and a user bound to each side of it; all of it removed after."""
    admin = cluster.api()
    renamed = subprocess.run(["sed", RENAME, str(MANIFEST)], capture_output=True, text=True, check=True).stdout
    # kubectl apply --selector '!oom-killer.io/only-for': the dev stack's rights, no option's.
    documents = [d for d in yaml.safe_load_all(renamed) if d and ONLY_FOR not in d["metadata"].get("labels", {})]
    named = [d["metadata"]["namespace"] for d in documents if "namespace" in d["metadata"]]
    named += [d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"]
    assert set(named) == {NAMESPACE}
    for document in documents:
        utils.create_from_dict(admin, document)
    deployer, deployer_api = _user(cluster, "deployer", DEPLOYERS)
    verifier, verifier_api = _user(cluster, "verifier", VERIFIERS)
    resizer, resizer_api = _user(cluster, "resizer", RESIZERS)
    yield Users(deployer, verifier, resizer, admin, deployer_api, verifier_api, resizer_api)
    rbac = client.RbacAuthorizationV1Api(admin)
    for document in documents:
        name = document["metadata"]["name"]
        if document["kind"] == "ClusterRole":
            rbac.delete_cluster_role(name)
        elif document["kind"] == "ClusterRoleBinding":
            rbac.delete_cluster_role_binding(name)
    client.CoreV1Api(admin).delete_namespace(NAMESPACE)


# How the API server words a refusal by RBAC (the authorizer), as against one by an admission plugin such as Pod
# Security (`violates PodSecurity`), which refuses with 403 too: only this wording proves the rights themselves said no.
RBAC_REFUSAL = re.compile(r'User "[^"]+" cannot \w+ resource "[^"]+"')


def refused_by_rbac(body: str) -> bool:
    """The 403's body (the API server's Status object, as JSON) words an RBAC refusal. The wording is in its
    `message`: in the raw body its quotes are escaped, so the pattern is matched on the decoded message."""
    try:
        status = json.loads(body)
    except json.JSONDecodeError:
        return False
    message = status.get("message") if isinstance(status, dict) else None
    return isinstance(message, str) and RBAC_REFUSAL.search(message) is not None and "PodSecurity" not in message


def _forbidden(what: str, call: Callable[[], object]) -> str:
    """`call` is refused by RBAC with 403 (not by an admission plugin after RBAC let it through); returns what was
    refused."""
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 403, f"{what}: {caught.value.status} {caught.value.reason} {caught.value.body}"
    body = str(caught.value.body)
    assert refused_by_rbac(body), f"{what}: refused, but not by RBAC: {body}"
    assert "PodSecurity" not in body, f"{what}: refused by Pod Security, not by RBAC: {body}"
    return what


def _restricted_pod(name: str) -> client.V1Pod:
    """A pod Pod Security `restricted` admits (non-root, no privilege escalation, no capabilities, RuntimeDefault
    seccomp): refused only if RBAC refuses it, so it shows an over-grant the privileged pod cannot."""
    container = client.V1Container(
        name="plain",
        image="oom-killer:any",
        security_context=client.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=65532,
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
    )
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(containers=[container]))


PRIVILEGED_POD_SPEC: dict[str, Any] = {
    "containers": [{"name": "root", "image": "oom-killer:any", "securityContext": {"privileged": True}}]
}


def _privileged_pod(name: str) -> client.V1Pod:
    container = client.V1Container(
        name="root", image="oom-killer:any", security_context=client.V1SecurityContext(privileged=True)
    )
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(containers=[container]))


def _run(pulumi: Pulumi, *args: str) -> str:
    """A Pulumi command as the deployer: it succeeds, within COMMAND_TIMEOUT, and says nothing was forbidden (a
    refused watch shows only as a warning, or as a wait). Its output."""
    process = subprocess.Popen(
        ["pulumi", *args, "--stack", STACK],
        cwd=pulumi.project,
        env=pulumi.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its plugins in its session (each in a process group of its own): on a timeout, all go
    )
    try:
        output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        for pid in session_processes(process.pid):
            os.kill(pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"pulumi {' '.join(args)} still ran after {COMMAND_TIMEOUT:.0f} s:\n{output}")
    assert process.returncode == 0, f"pulumi {' '.join(args)} failed ({process.returncode}):\n{output}"
    assert "forbidden" not in output.lower(), output
    return output


def _wait_for_oom_kill(admin: Any) -> dict[str, Any]:
    core = client.CoreV1Api(admin)
    deadline = time.monotonic() + OOM_TIMEOUT
    while time.monotonic() < deadline:
        for pod in as_json(admin, core.list_namespaced_pod(NAMESPACE))["items"]:
            for status in pod.get("status", {}).get("containerStatuses", []):
                terminated = status.get("lastState", {}).get("terminated") or {}
                if terminated.get("reason") == "OOMKilled":
                    return dict(status)
        time.sleep(1)
    pytest.fail(f"no pod in {NAMESPACE} was OOM-killed within {OOM_TIMEOUT:.0f} s")


def _oom_killer(pulumi: Pulumi, kubeconfig: Path, *args: str, codes: tuple[int, ...] = (0,)) -> dict[str, str]:
    """An oom-killer command on the dev stack with this user's kubeconfig, as the user runs it, ending with one of
    these exit codes: its last line."""
    result = subprocess.run(
        [str(PROJECT / "venv" / "bin" / "oom-killer"), *args, "--stack", STACK, "--kubeconfig", str(kubeconfig)],
        cwd=pulumi.project,
        env={**pulumi.env, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        check=False,
        timeout=150,
    )
    lines = [logfmt.parse(line) for line in result.stdout.splitlines() if line.strip()]
    assert result.returncode in codes, (result.stdout, result.stderr)
    return lines[-1]


def _verify(pulumi: Pulumi, users: Users) -> dict[str, str]:
    """make verify's command with the verifier's kubeconfig: the verdict line."""
    return _oom_killer(pulumi, users.verifier, "verify", "--kills", "1", "--timeout", "90s")


def _pod_name(admin: Any) -> str:
    (pod,) = as_json(admin, client.CoreV1Api(admin).list_namespaced_pod(NAMESPACE))["items"]
    return str(pod["metadata"]["name"])


def _pod_security_refuses_a_privileged_deployment(users: Users) -> str:
    """The deployer may apply its Deployment by name, with any pod template: Pod Security refuses the pods."""
    apps = client.AppsV1Api(users.deployer_api)
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": WORKLOAD, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "escalation"}},
            "template": {"metadata": {"labels": {"app": "escalation"}}, "spec": PRIVILEGED_POD_SPEC},
        },
    }
    apps.patch_namespaced_deployment(
        WORKLOAD, NAMESPACE, body, field_manager="e2e", _content_type="application/apply-patch+yaml"
    )
    core = client.CoreV1Api(users.admin)
    deadline = time.monotonic() + POD_SECURITY_TIMEOUT
    try:
        while time.monotonic() < deadline:
            for event in as_json(users.admin, core.list_namespaced_event(NAMESPACE))["items"]:
                involved = event.get("involvedObject", {})
                message = str(event.get("message", ""))
                if (
                    involved.get("kind") == "ReplicaSet"
                    and event.get("reason") == "FailedCreate"
                    and "PodSecurity" in message
                ):
                    assert not core.list_namespaced_pod(NAMESPACE, label_selector="app=escalation").items
                    return message
            time.sleep(0.5)
        pytest.fail(f"no FailedCreate naming PodSecurity within {POD_SECURITY_TIMEOUT:.0f} s")
    finally:
        apps.delete_namespaced_deployment(WORKLOAD, NAMESPACE)


@pytest.mark.timeout(300)
def test_the_users_commands_need_only_the_manifests_rights(
    users: Users, cluster: Cluster, engine: docker.DockerClient, tmp_path: Path
) -> None:
    started = time.monotonic()
    pulumi = project_with_cli(cluster, tmp_path)
    pulumi.env["KUBECONFIG"] = str(users.deployer)
    pulumi.run("stack", "select", "--create", STACK)
    pulumi.run("config", "set", "baseImage", os.environ["BASE_IMAGE"])
    pulumi.run("config", "set", "namespace", NAMESPACE)
    pulumi.run("config", "set", "createNamespace", "false")

    seconds: dict[str, float] = {}

    def timed(phase: str, *args: str) -> str:
        phase_started = time.monotonic()
        output = _run(pulumi, *args)
        seconds[phase] = time.monotonic() - phase_started
        return output

    # pulumi up, as the deployer: the objects in the admin's namespace, the pod OOM-killed.
    timed("up", "up", "--yes")
    image = str(pulumi.outputs(STACK)["image"])
    cluster.load_image(workload_archive(engine, image))
    core = client.CoreV1Api(users.admin)
    # The pod the Deployment made before its image was on the node waits out the pull back-off: a new one starts now.
    core.delete_collection_namespaced_pod(NAMESPACE)
    timed("preview", "preview", "--refresh", "--expect-no-changes")

    # make verify's command, as the verifier: the kill as predicted.
    verify_started = time.monotonic()
    verdict = _verify(pulumi, users)
    seconds["verify"] = time.monotonic() - verify_started
    assert verdict["verdict"] == "as-predicted", verdict
    status = _wait_for_oom_kill(users.admin)
    assert status["lastState"]["terminated"]["exitCode"] == 137

    # oom-killer resize, as the resizer: the growing hog's limit lowered in place, and the kubelet's answer. What that
    # answer is depends on the kubelet's pace against the dev hog's 1 s steps, which test_resize.py holds to its
    # prediction with the room to tell; here it proves the rights: the patch went through (the pod's generation moved)
    # and the command watched to a verdict (exit 0 or 1), never 2 (the API server refused it) or 3.
    resized = _oom_killer(pulumi, users.resizer, "resize", "--to-mb", "96", "--timeout", "90s", codes=(0, 1))
    assert resized["resize"] in ("killed", "refused"), resized
    (resized_pod,) = as_json(users.admin, core.list_namespaced_pod(NAMESPACE))["items"]
    assert resized_pod["metadata"]["generation"] > 1, resized_pod["metadata"]

    # What the same kubeconfigs may not do: each a 403 from the API.
    deployer, verifier = client.CoreV1Api(users.deployer_api), client.CoreV1Api(users.verifier_api)
    resizer = client.CoreV1Api(users.resizer_api)
    core.create_namespaced_secret(
        NAMESPACE, client.V1Secret(metadata=client.V1ObjectMeta(name="the-admins"), string_data={"k": "v"})
    )
    label = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    refused = [
        _forbidden("deployer lists kube-system's secrets", lambda: deployer.list_namespaced_secret("kube-system")),
        _forbidden("deployer lists default's secrets", lambda: deployer.list_namespaced_secret("default")),
        _forbidden("deployer lists its own namespace's secrets", lambda: deployer.list_namespaced_secret(NAMESPACE)),
        _forbidden("deployer reads another secret", lambda: deployer.read_namespaced_secret("the-admins", NAMESPACE)),
        _forbidden(
            "deployer creates a privileged pod",
            lambda: deployer.create_namespaced_pod(NAMESPACE, _privileged_pod("privileged")),
        ),
        # What the program never declares, each a plain object Pod Security has nothing against: RBAC alone says no.
        _forbidden(
            "deployer creates a restricted pod",
            lambda: deployer.create_namespaced_pod(NAMESPACE, _restricted_pod("plain")),
        ),
        _forbidden(
            "deployer creates a config map",
            lambda: deployer.create_namespaced_config_map(
                NAMESPACE, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="mine"))
            ),
        ),
        _forbidden(
            "deployer creates a service account",
            lambda: deployer.create_namespaced_service_account(
                NAMESPACE, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="mine"))
            ),
        ),
        _forbidden(
            "deployer creates a role",
            lambda: client.RbacAuthorizationV1Api(users.deployer_api).create_namespaced_role(
                NAMESPACE, client.V1Role(metadata=client.V1ObjectMeta(name="mine"), rules=[])
            ),
        ),
        _forbidden("deployer patches a node", lambda: deployer.patch_node(NODE, {"metadata": {"labels": {"a": "b"}}})),
        _forbidden(
            "deployer creates a namespace",
            lambda: deployer.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="mine"))),
        ),
        _forbidden("deployer patches its namespace's labels", lambda: deployer.patch_namespace(NAMESPACE, label)),
        _forbidden(
            "verifier scales the deployment",
            lambda: client.AppsV1Api(users.verifier_api).patch_namespaced_deployment_scale(
                WORKLOAD, NAMESPACE, {"spec": {"replicas": 0}}
            ),
        ),
        _forbidden("verifier deletes the pods", lambda: verifier.delete_collection_namespaced_pod(NAMESPACE)),
        _forbidden(
            "verifier creates a config map",
            lambda: verifier.create_namespaced_config_map(
                NAMESPACE, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="mine"))
            ),
        ),
        _forbidden("verifier patches a node", lambda: verifier.patch_node(NODE, {"metadata": {"labels": {"a": "b"}}})),
        # The resizer's one write is the resize subresource: not the pod itself, not the workload.
        _forbidden(
            "resizer patches a pod",
            lambda: resizer.patch_namespaced_pod(
                _pod_name(users.admin), NAMESPACE, {"metadata": {"labels": {"a": "b"}}}
            ),
        ),
        _forbidden("resizer deletes the pods", lambda: resizer.delete_collection_namespaced_pod(NAMESPACE)),
        _forbidden(
            "resizer scales the deployment",
            lambda: client.AppsV1Api(users.resizer_api).patch_namespaced_deployment_scale(
                WORKLOAD, NAMESPACE, {"spec": {"replicas": 0}}
            ),
        ),
    ]

    # pulumi destroy, as the deployer: the stack's objects gone, the admin's namespace left.
    timed("destroy", "destroy", "--yes")
    # The Deployment goes in the background (foreground deletion: its pods first; skipAwait does not wait for it).
    apps = client.AppsV1Api(users.admin)
    deadline = time.monotonic() + GONE_TIMEOUT
    while apps.list_namespaced_deployment(NAMESPACE).items:
        assert time.monotonic() < deadline, f"the Deployment was still there {GONE_TIMEOUT:.0f} s after destroy"
        time.sleep(0.5)
    assert not core.list_namespaced_limit_range(NAMESPACE).items
    assert not client.NetworkingV1Api(users.admin).list_namespaced_network_policy(NAMESPACE).items
    assert as_json(users.admin, core.read_namespace(NAMESPACE))["status"]["phase"] == "Active"

    # The second wall: RBAC lets the deployer apply its Deployment with any pod in it; Pod Security refuses the pods.
    pod_security = _pod_security_refuses_a_privileged_deployment(users)
    assert "privileged" in pod_security, pod_security
    fact("least_privilege_pod_security", pod_security[:240])
    phases = " ".join(f"{phase}={value:.1f}" for phase, value in seconds.items())
    fact(
        "least_privilege",
        f"ok pulumi_up=true verify={verdict['verdict']} resize={resized['resize']} destroy=true refused={len(refused)} "
        f"pod_security=FailedCreate seconds={time.monotonic() - started:.1f} ({phases})",
    )
