"""Every Kubernetes object the program declares, as it declares it, against the real schemas and checkov."""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from oomtools.render import KIND_ORDER, Rendered, render, stack_config
from tests.support import PROJECT, require

# The oldest and the newest Kubernetes the project supports.
VERSIONS = ["1.31.0", "1.37.0"]
CONFIGS = {
    "dev": stack_config("dev"),
    "pushed": {
        "imageRepository": "ghcr.io/acme/oom-killer",
        "platform": "linux/amd64",
        "memoryLimitMb": "512",
        "memoryCeilingMb": "400",
        "replicas": "2",
        "namespace": "oom-lab",
    },
    "prebuilt": {"image": "registry.example.com/oom-killer:1.0", "replicas": "0"},
    # scope=node: a DaemonSet, aimed at a node pool and tolerating its taints.
    "node": {
        **stack_config("dev"),
        "scope": "node",
        "nodeSelector": "pool=oom-lab,kubernetes.io/os=linux",
        "tolerations": "dedicated=oom-lab:NoSchedule,oom-lab.example.com/hog:NoExecute,spot=true,maintenance",
    },
    "node-stopped": {"scope": "node", "replicas": "0", "memoryKind": "tmpfs"},
    # memoryRequestMb: a Burstable pod, its memory request below its limit.
    "burstable": {**stack_config("dev"), "memoryRequestMb": "48"},
}


def objects(config_name: str) -> list[dict[str, Any]]:
    return render(CONFIGS[config_name]).kubernetes_objects()


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one object of this kind (looked up, never taken by its place in the list)."""
    (found,) = [manifest for manifest in manifests if manifest["kind"] == kind]
    return found


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_every_object_validates_strictly(config_name: str, version: str) -> None:
    declared = objects(config_name)
    workload = "DaemonSet" if CONFIGS[config_name].get("scope") == "node" else "Deployment"
    assert sorted(o["kind"] for o in declared) == sorted(["Namespace", "LimitRange", "NetworkPolicy", workload])
    for manifest in declared:
        kubernetes_validate.validate(manifest, version, strict=True)


# limitScope=pod: the pod's spec.resources, a field from 1.32 (alpha; beta and on by default from 1.34, what the
# setting documents).
POD_SCOPED = {**stack_config("dev"), "limitScope": "pod"}


@pytest.mark.parametrize("version", ["1.34.0", VERSIONS[-1]])
def test_pod_level_limits_validate_strictly_where_kubernetes_has_them(version: str) -> None:
    for manifest in render(POD_SCOPED).kubernetes_objects():
        kubernetes_validate.validate(manifest, version, strict=True)


def test_pod_level_limits_are_unknown_to_the_oldest_release_the_others_support() -> None:
    deployment = of_kind(render(POD_SCOPED).kubernetes_objects(), "Deployment")
    with pytest.raises(kubernetes_validate.ValidationError, match="resources"):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


@pytest.mark.parametrize(("scope", "absent"), [("deployment", "DaemonSet"), ("node", "Deployment")])
def test_the_objects_come_in_the_programs_order_however_the_engine_took_them(scope: str, absent: str) -> None:
    # The mock engine records registrations in the order they reach it, which Pulumi does not promise: every
    # order they could arrive in gives the same objects in the same order, each after the ones it needs.
    rendered = render({**CONFIGS["dev"], "prometheusRule": "true", "scope": scope})
    expected = rendered.kubernetes_objects()
    assert [o["kind"] for o in expected] == [kind for kind in KIND_ORDER if kind != absent]
    names = [resource.name for resource in rendered.kubernetes_resources()]
    for place, name in enumerate(names):
        assert set(rendered.dependencies[name]) & set(names) <= set(names[:place]), (name, names)
    for arrival in itertools.permutations(rendered.resources):
        shuffled = Rendered(list(arrival), rendered.exports, rendered.dependencies)
        assert shuffled.kubernetes_objects() == expected


def test_strict_validation_catches_a_field_kubernetes_does_not_have() -> None:
    deployment = copy.deepcopy(of_kind(objects("dev"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["memoryLimit"] = "128Mi"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def checkov_command() -> str | None:
    for candidate in (os.environ.get("CHECKOV"), str(PROJECT / "venv-checkov" / "bin" / "checkov")):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("checkov")


def checkov_failures(manifests: list[dict[str, Any]], tmp_path: Path) -> tuple[list[tuple[str, str]], Any, str]:
    """checkov's failed checks on these objects, its report, and its stderr where it exited non-zero with none."""
    checkov = checkov_command()
    require(checkov is not None, "checkov is not installed (make test installs it into venv-checkov)")
    assert checkov is not None
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    result = subprocess.run(
        [checkov, "--config-file", str(PROJECT / ".checkov.yaml"), "-d", str(tmp_path), "-o", "json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["check_name"]) for c in report["results"]["failed_checks"]]
    return failed, report, result.stderr if result.returncode != 0 and not failed else ""


@pytest.mark.parametrize("config_name", ["dev", "pushed", "node", "burstable"])
def test_checkov_finds_nothing_failing(config_name: str, tmp_path: Path) -> None:
    failed, report, crashed = checkov_failures(objects(config_name), tmp_path)
    assert failed == []
    assert report["summary"]["passed"] >= 50, report["summary"]
    assert not crashed, crashed


def test_checkov_fails_a_pod_level_limit_only_on_the_container_limits_it_looks_for(tmp_path: Path) -> None:
    # What docs/cluster.md#pod-level-limits tells a user who runs checkov: its resource checks read the containers'.
    failed, report, _ = checkov_failures(render(POD_SCOPED).kubernetes_objects(), tmp_path)
    assert sorted(check for check, _ in failed) == ["CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13"], failed
    assert report["summary"]["passed"] >= 46, report["summary"]
