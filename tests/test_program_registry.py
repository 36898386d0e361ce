"""The image and the cluster: nothing is deployed before the image is built (and pushed), and a pushed image with
registry credentials in the config is pulled by the nodes with the same credentials, from a Secret of type
dockerconfigjson in the stack's namespace that the pod names, the password a secret throughout."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys

from pulumi.runtime import rpc

from infra.image import REGISTRY_LOGIN_NAME
from oomtools.render import render
from tests.support import PROJECT
from tests.test_program import DEPLOYMENT, IMAGE

CREDENTIALS_OBJECT = "kubernetes:core/v1:Secret"
PUSHED = {"imageRepository": "registry.example.com:5000/team/oom-killer", "platform": "linux/amd64"}


def test_credentials_in_the_config_become_the_pods_pull_secret_and_stay_secret() -> None:
    rendered = render(
        {**PUSHED, "registryUsername": "robot", "registryPassword": "s3cret", "namespace": "hogs"},
        secrets=frozenset({"registryPassword"}),
    )
    secret = rendered.one(CREDENTIALS_OBJECT).inputs
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["name"] == REGISTRY_LOGIN_NAME
    assert secret["metadata"]["namespace"] == "hogs"
    # The secrecy reaches the engine: the state and `pulumi stack export` hold the data encrypted.
    data = secret["stringData"]
    assert data[rpc._special_sig_key] == rpc._special_secret_sig
    auths = json.loads(data["value"][".dockerconfigjson"])["auths"]
    assert list(auths) == ["registry.example.com:5000"]  # the repository's host, as the kubelet matches it
    entry = auths["registry.example.com:5000"]
    assert (entry["username"], entry["password"]) == ("robot", "s3cret")
    assert base64.b64decode(entry["auth"]).decode() == "robot:s3cret"

    pod = rendered.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": REGISTRY_LOGIN_NAME}]
    assert "s3cret" not in json.dumps(rendered.one(DEPLOYMENT).inputs)
    assert "s3cret" not in json.dumps(rendered.exports)


def test_without_credentials_in_the_config_there_is_no_secret_and_the_pod_names_none() -> None:
    for config in ({}, PUSHED):  # a local build; a push with the user's docker login
        rendered = render(config)
        assert not [r for r in rendered.resources if r.type == CREDENTIALS_OBJECT]
        assert "imagePullSecrets" not in rendered.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]


def test_nothing_reaches_the_cluster_before_the_image_is_built_and_pushed() -> None:
    """A build or push that fails (a wrong registry password) stops `pulumi up` before the namespace exists."""
    for config in ({}, PUSHED):
        rendered = render(config)
        assert "workload-image" in rendered.dependencies["namespace"]
    prebuilt = render({"image": "registry.example.com/oom-killer:1.0"})
    assert "workload-image" not in prebuilt.dependencies["namespace"]


def test_the_build_runs_with_no_network_on_any_engine() -> None:
    """The real provider builds with BuildKit, whose RUN steps need the engine's default bridge unless told
    otherwise: on an engine without one (dockerd --bridge=none, as CI's) `pulumi up` failed with "network bridge
    not found". The Dockerfile's RUN needs no network, so the build asks for none, locally and pushed alike."""
    for config in ({}, PUSHED):
        assert render(config).one(IMAGE).inputs["build"]["network"] == "none"


def test_an_interrupt_ends_the_program_quietly_and_leaves_the_callers_ctrl_c_alone() -> None:
    """The language host interrupts the program when an update fails; the program then exits 1 with no traceback
    (the e2e wrong-password test sees the whole output). Rendering it must not take Ctrl-C from the caller."""
    before = signal.getsignal(signal.SIGINT)
    render({})
    assert signal.getsignal(signal.SIGINT) is before
    program = (
        "import os, signal, time\n"
        "from infra.cancellation import exit_quietly_when_interrupted\n"
        "exit_quietly_when_interrupted()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(5)\n"
    )
    ended = subprocess.run(
        [sys.executable, "-c", program], cwd=PROJECT, capture_output=True, text=True, timeout=30, check=False
    )
    assert (ended.returncode, ended.stdout, ended.stderr) == (1, "", "")
