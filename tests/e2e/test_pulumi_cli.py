"""The user's own commands, run for real: the Pulumi CLI, its Python language host and its kubernetes and docker
provider plugins (each built from its Go module or upstream source) against the test cluster and the CI's Docker
engine, with a local state backend in a temporary folder.

The project is copied to a temporary folder (its stack files get written to, its workload gets changed), with the
project's virtualenv. The docker provider builds the image from the Dockerfile on the engine, as on a user's
machine; the local image reaches the node as `kind load docker-image` brings it (docs/cluster.md), the pushed one
through a registry that wants a login. The pushed test comes last: once the kubelet (1.35+,
KubeletEnsureSecretPulledImages) has pulled an image with a secret, it makes a pod that names it by a loaded tag
pull again (ErrImagePull).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import Cluster, as_json
from tests.e2e.harness.state import BIN
from tests.e2e.pulumi_cli import Pulumi, namespace_gone, project_with_cli
from tests.e2e.support import Registry, fact, workload_archive
from workload import logfmt

pytestmark = pytest.mark.e2e

STACK = "dev"
NAMESPACE = "oom-killer-pulumi"  # the deployed fixture's objects already hold the dev stack's own namespace
PUSHED_STACK = "pushed"
PUSHED_NAMESPACE = "oom-killer-pulumi-pushed"
ROLLOUT_TIMEOUT = 180.0
# A file of the build context the tests change, as a user changing the workload would: a new content tag.
CHANGED = Path("workload") / "__init__.py"


@pytest.fixture(scope="module")
def pulumi(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Pulumi:
    return project_with_cli(cluster, tmp_path_factory.mktemp("pulumi"))


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


def _oom_killed(pulumi: Pulumi, image: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The status of a container of the namespace's pods that runs `image` and was OOM-killed.

    A container runs `image` when its status names it, or, for an image run by digest, when its imageID has that
    digest: the kubelet names an image by the first tag the node knows it by, and a pushed image whose content the
    node already had under a loaded tag (the same build) is reported under that tag.
    """
    core = client.CoreV1Api(pulumi.api)
    digest = image.rsplit("@", 1)[1] if "@" in image else None
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    seen: list[Any] = []
    while time.monotonic() < deadline:
        pods = as_json(pulumi.api, core.list_namespaced_pod(namespace))["items"]
        seen = [status for pod in pods for status in pod.get("status", {}).get("containerStatuses", [])]
        for status in seen:
            runs = status.get("image", "").endswith(image) or bool(
                digest and status.get("imageID", "").endswith(digest)
            )
            terminated = status.get("lastState", {}).get("terminated") or {}
            if runs and terminated.get("reason") == "OOMKilled":
                return dict(status)
        time.sleep(1)
    events = [e.get("message") for e in as_json(pulumi.api, core.list_namespaced_event(namespace))["items"]]
    pytest.fail(f"no pod running {image} was OOM-killed within {ROLLOUT_TIMEOUT:.0f} s: {seen} {events[-5:]}")


def _change_the_workload(pulumi: Pulumi, note: str) -> None:
    """A change under workload/, as a user editing the hog makes one: the build context, so the image, changes."""
    path = pulumi.project / CHANGED
    path.write_text(path.read_text() + f"# {note}\n")


def _engine_images(engine: docker.DockerClient) -> dict[str, list[str]]:
    """The engine's images: ID -> tags."""
    return {str(image.id): sorted(image.tags) for image in engine.images.list()}


def _provider_version(pulumi: Pulumi, stack: str, package: str) -> str:
    """The version of the provider plugin the engine ran for this stack, from its state."""
    state = json.loads(pulumi.run("stack", "export", "--stack", stack).stdout)
    versions = {
        str(resource.get("inputs", {}).get("version", "?"))
        for resource in state["deployment"].get("resources", [])
        if resource["type"] == f"pulumi:providers:{package}"
    }
    assert len(versions) == 1, versions
    return versions.pop()


def test_the_users_commands_build_deploy_change_refuse_and_destroy(
    pulumi: Pulumi, cluster: Cluster, engine: docker.DockerClient
) -> None:
    fact("pulumi", pulumi.run("version").stdout.strip())
    fact("language_host", _language_host_version())

    # make up (README) on the dev stack, no image set: the docker provider builds it from the Dockerfile, FROM the
    # CI's base image. The workload is changed first, so that nothing built before (the deployed fixture's image
    # has the same content) can stand in for the provider's build.
    _change_the_workload(pulumi, "built by the docker provider in make e2e")
    pulumi.run("stack", "select", "--create", STACK)
    pulumi.run("config", "set", "baseImage", os.environ["BASE_IMAGE"])
    pulumi.run("config", "set", "namespace", NAMESPACE)
    started = time.monotonic()
    pulumi.make("up")
    up_seconds = time.monotonic() - started
    outputs = pulumi.outputs(STACK)
    image = str(outputs["image"])
    assert image.startswith("oom-killer:"), image
    built = engine.images.get(image)  # the provider's build, on the engine DOCKER_HOST names
    fact("docker_provider", _provider_version(pulumi, STACK, "docker"))
    assert outputs["namespace"] == NAMESPACE
    assert outputs["predictedSecondsToOomKill"]
    core = client.CoreV1Api(pulumi.api)
    assert core.read_namespace(NAMESPACE)
    assert client.CoreV1Api(pulumi.api).list_namespaced_limit_range(NAMESPACE).items
    assert client.NetworkingV1Api(pulumi.api).list_namespaced_network_policy(NAMESPACE).items
    # kind's path (docs/cluster.md): the node has its own image store; `kind load docker-image` after make up
    cluster.load_image(workload_archive(engine, image))
    status = _oom_killed(pulumi, image)
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["imageID"] == built.id, (status["imageID"], built.id)  # the pod runs the provider's very build
    fact("pulumi_up", f"ok seconds={up_seconds:.1f}")
    fact("built_by_provider", f"ok image={image}")

    # pulumi config set memoryIncrementMb 30; pulumi up: a rollout with the new pace, the same image
    pulumi.run("config", "set", "memoryIncrementMb", "30")
    pulumi.run("up", "--yes", "--stack", STACK)
    container = pulumi.deployment(NAMESPACE)["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MEMORY_INCREMENT_MB"] == "30"
    assert container["image"] == image
    start = _wait_for_pod_logging(pulumi, 30)
    fact("config_set_rollout", f"ok memory_increment_mb={start['increment_mib']}")

    # a change under workload/: a new build under a new tag, and a rollout that runs it
    generation = pulumi.deployment(NAMESPACE)["metadata"]["generation"]
    _change_the_workload(pulumi, "changed again")
    pulumi.run("up", "--yes", "--stack", STACK)
    rebuilt = str(pulumi.outputs(STACK)["image"])
    assert rebuilt != image
    assert rebuilt.startswith("oom-killer:"), rebuilt
    assert pulumi.deployment(NAMESPACE)["spec"]["template"]["spec"]["containers"][0]["image"] == rebuilt
    assert pulumi.deployment(NAMESPACE)["metadata"]["generation"] == generation + 1
    cluster.load_image(workload_archive(engine, rebuilt))
    assert _oom_killed(pulumi, rebuilt)["imageID"] == engine.images.get(rebuilt).id
    image = rebuilt
    fact("rebuild_on_change", f"ok image={rebuilt}")

    # nothing changed: no build, no rollout
    generation = pulumi.deployment(NAMESPACE)["metadata"]["generation"]
    images = _engine_images(engine)
    pulumi.run("preview", "--expect-no-changes", "--stack", STACK)
    pulumi.run("up", "--yes", "--expect-no-changes", "--stack", STACK)
    assert pulumi.deployment(NAMESPACE)["metadata"]["generation"] == generation
    assert _engine_images(engine) == images
    fact("no_change_no_build", "ok")
    fact("no_change_no_rollout", "ok")

    # a bad value: one line naming the key and the value, and nothing changed in the cluster
    pulumi.run("config", "set", "memoryIncrementMb", "0")
    refused = pulumi.run("up", "--yes", "--stack", STACK, check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "invalid config oom-killer:memoryIncrementMb=0: " in said, said
    assert "Traceback" not in said, said
    assert pulumi.deployment(NAMESPACE)["metadata"]["generation"] == generation
    pulumi.run("config", "set", "memoryIncrementMb", "30")
    # a typo'd key: Pulumi passes undeclared keys through to the program, which refuses them (docs/configuration.md)
    pulumi.run("config", "set", "memoryIncremntMb", "30")
    typo = pulumi.run("up", "--yes", "--stack", STACK, check=False)
    said = typo.stdout + typo.stderr
    assert typo.returncode != 0
    assert "invalid config oom-killer:memoryIncremntMb=" in said, said
    assert "did you mean memoryIncrementMb?" in said, said
    assert pulumi.deployment(NAMESPACE)["metadata"]["generation"] == generation
    pulumi.run("config", "rm", "memoryIncremntMb")
    fact("bad_config_refused", "ok unknown_key_refused=true")

    # a local backend's passphrase salts the stack file, as docs/cluster.md warns
    assert "encryptionsalt:" in (pulumi.project / f"Pulumi.{STACK}.yaml").read_text()

    # make destroy (pulumi destroy): the namespace and all in it are gone, the stack holds nothing, and the local
    # image stays on the engine, the user's to remove (docker rmi)
    pulumi.make("destroy")
    assert namespace_gone(pulumi, NAMESPACE), f"namespace {NAMESPACE} still there after pulumi destroy"
    state = json.loads(pulumi.run("stack", "export", "--stack", STACK).stdout)
    assert not state["deployment"].get("resources"), state["deployment"].get("resources")
    assert engine.images.get(image).id
    fact("pulumi_destroy", "ok namespace_gone=true local_image_kept=true")


def test_the_provider_pushes_with_a_login_and_the_node_pulls_by_its_repo_digest(
    pulumi: Pulumi, registry: Registry, engine: docker.DockerClient
) -> None:
    repository = f"{registry.address}/oom-killer"
    version = engine.version()
    pulumi.run("stack", "select", "--create", PUSHED_STACK)
    for key, value in {
        "baseImage": os.environ["BASE_IMAGE"],
        "namespace": PUSHED_NAMESPACE,
        "imageRepository": repository,
        "platform": f"{version['Os']}/{version['Arch']}",
        "registryUsername": registry.username,
    }.items():
        pulumi.run("config", "set", "--stack", PUSHED_STACK, key, value)
    core = client.CoreV1Api(pulumi.api)

    # a wrong password: the push is refused, pulumi up stops saying so, and nothing reaches the cluster
    wrong = "not-" + registry.password
    # `--` before the value: a password may start with "-" (one in 64 of token_urlsafe's did, and pulumi read it as
    # a flag); a user's goes in at the prompt (docs/cluster.md).
    pulumi.run("config", "set", "--stack", PUSHED_STACK, "--secret", "registryPassword", "--", wrong)
    refused = pulumi.run("up", "--yes", "--stack", PUSHED_STACK, check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert registry.address in said, said
    assert "unauthorized" in said.lower() or "authentication" in said.lower(), said
    assert "Traceback" not in said, said
    assert wrong not in said, said
    with pytest.raises(ApiException) as missing:
        core.read_namespace(PUSHED_NAMESPACE)
    assert missing.value.status == 404
    fact("wrong_password_refused", "ok cluster_unchanged=true")

    # the right one: pushed, run by the provider's repoDigest, pulled by the node with the stack's pull secret
    pulumi.run("config", "set", "--stack", PUSHED_STACK, "--secret", "registryPassword", "--", registry.password)
    pulumi.run("up", "--yes", "--stack", PUSHED_STACK)
    reference = str(pulumi.outputs(PUSHED_STACK)["image"])
    assert reference.startswith(f"{repository}@sha256:"), reference
    digest = reference.rsplit("@", 1)[1]
    deployment = pulumi.deployment(PUSHED_NAMESPACE)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == reference
    status = _oom_killed(pulumi, reference, PUSHED_NAMESPACE)
    assert status["imageID"].endswith(digest), (status["imageID"], digest)
    events = as_json(pulumi.api, core.list_namespaced_event(PUSHED_NAMESPACE))["items"]
    pulled = [event["message"] for event in events if event.get("reason") == "Pulled"]
    assert any(reference in message and "uccessfully pulled" in message for message in pulled), pulled
    fact("pushed_by_provider", f"ok repo_digest={digest}")

    # the password, in plain text, nowhere but in the secret's own data (and `--show-secrets`, which proves the
    # search can find it)
    exported = pulumi.run("stack", "export", "--stack", PUSHED_STACK).stdout
    shown = pulumi.run("stack", "export", "--stack", PUSHED_STACK, "--show-secrets").stdout
    assert registry.password in shown
    assert registry.password not in exported
    assert registry.password not in json.dumps(deployment)
    assert registry.password not in (pulumi.project / f"Pulumi.{PUSHED_STACK}.yaml").read_text()
    fact("registry_secret_hidden", "true")

    pulumi.run("destroy", "--yes", "--stack", PUSHED_STACK)
    assert namespace_gone(pulumi, PUSHED_NAMESPACE), f"namespace {PUSHED_NAMESPACE} still there after destroy"


def _language_host_version() -> str:
    """The Python language host's version, as it reports it."""
    result = subprocess.run(
        [str(BIN / "pulumi-language-python"), "-version"], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()
