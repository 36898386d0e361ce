"""The pushed-image path on the real node: built as the stack builds it, pushed to a registry, run by its digest.

The stack (with `imageRepository` set) declares the Deployment's image as the docker Image's `repoDigest`; under
mocks that output is made up, so the digest the registry really gave the push stands in for it here, as the
provider's output would. The node has never been given the image: containerd must pull it from the registry.

This file runs last (pytest takes them by name): the same content is loaded into the node under the dev stack's
tag, and once the kubelet (1.35+, KubeletEnsureSecretPulledImages) has pulled it from a registry, it records that
pull by the image's ID and insists on pulling again a pod that names it by its loaded tag: ErrImagePull.
"""

from __future__ import annotations

import time
from typing import Any

import docker
import pytest
from kubernetes import client

from oomtools.rehearsal import build_image, declared_pod
from oomtools.render import stack_config
from tests.e2e.cluster import Cluster, as_json
from tests.e2e.conftest import Registry, apply_in_dependency_order, fact, render_for_the_node

pytestmark = pytest.mark.e2e

NAMESPACE = "oom-killer-pushed"
PULL_TIMEOUT = 120.0


def push(client: docker.DockerClient, image_name: str) -> str:
    """Push a built image; return the manifest digest the registry answered with."""
    repository, tag = image_name.rsplit(":", 1)
    digest = ""
    for event in client.images.push(repository, tag=tag, stream=True, decode=True):
        assert "error" not in event, f"the push failed: {event['error']}"
        digest = event.get("aux", {}).get("Digest", digest)
    assert digest.startswith("sha256:"), "the registry answered the push with no digest"
    return digest


def test_a_pushed_image_runs_by_digest_pulled_by_the_node(
    cluster: Cluster, registry: Registry, engine: docker.DockerClient
) -> None:
    repository = f"{registry.address}/oom-killer"
    version = engine.version()
    config = {
        **stack_config("dev"),
        "imageRepository": repository,
        "platform": f"{version['Os']}/{version['Arch']}",
        "namespace": NAMESPACE,
    }
    rendered = render_for_the_node(config, "pushed")
    pod_declared = declared_pod(rendered)
    digest = push(engine, build_image(engine, pod_declared))

    deployment = rendered.one("kubernetes:apps/v1:Deployment").inputs
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith(f"{repository}@sha256:"), "a pushed image must run by its digest"
    reference = f"{repository}@{digest}"
    container["image"] = reference  # what the provider reports as repoDigest after this push

    api = cluster.api()
    apply_in_dependency_order(api, rendered)
    core = client.CoreV1Api(api)
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())

    status: dict[str, Any] = {}
    deadline = time.monotonic() + PULL_TIMEOUT
    while time.monotonic() < deadline and not status.get("imageID"):
        pods = as_json(api, core.list_namespaced_pod(NAMESPACE, label_selector=selector))["items"]
        statuses = [s for pod in pods for s in pod.get("status", {}).get("containerStatuses", [])]
        status = statuses[0] if statuses else {}
        time.sleep(0.5)
    events = as_json(api, core.list_namespaced_event(NAMESPACE))["items"]
    pulled = [event["message"] for event in events if event.get("reason") == "Pulled"]

    assert status.get("imageID"), f"the container never started from the pushed image; events: {events[-5:]}"
    assert status["imageID"].endswith(digest), status["imageID"]
    assert any(reference in message and "uccessfully pulled" in message for message in pulled), pulled
    core.delete_namespace(NAMESPACE)
    fact("pushed_by_digest", f"ok image={reference}")
