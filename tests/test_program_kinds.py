"""The stack's objects for each memoryKind and processModel (issue 8), under Pulumi's mocks: the emptyDir each kind
needs, at the path the workload is told, with its size, the ephemeral-storage the LimitRange covers; strict schema
validation and checkov for each; bad values refused in one line with nothing declared."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.kube import MEMORY_DIR, PAGECACHE_ROOM_MIB
from infra.settings import ConfigError
from oomtools.render import Rendered, render, stack_config
from tests.support import PROJECT, require
from tests.test_manifests import VERSIONS, checkov_command
from tests.test_program import DEPLOYMENT, LIMIT_RANGE, assert_refused_and_nothing_declared, container, env_of

CASES = {
    "anonymous": {},
    "tmpfs": {"memoryKind": "tmpfs"},
    "pagecache": {"memoryKind": "pagecache"},
    "pagecache-ceiling": {"memoryKind": "pagecache", "memoryCeilingMb": "1000"},
    "supervised": {"processModel": "supervised"},
    "supervised-tmpfs": {"processModel": "supervised", "memoryKind": "tmpfs"},
}
# Pod Security "restricted" allows only these volume types.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected"}


def rendered(case: str) -> Rendered:
    return render({**stack_config("dev"), **CASES[case]})


def pod_of(stack: Rendered) -> dict[str, Any]:
    return dict(stack.one(DEPLOYMENT).inputs["spec"]["template"]["spec"])


def test_anonymous_single_declares_no_volume_and_no_new_variable() -> None:
    stack = rendered("anonymous")
    assert "volumes" not in pod_of(stack)
    assert "volumeMounts" not in container(stack)
    assert not {"MEMORY_KIND", "MEMORY_DIR", "PROCESS_MODEL"} & set(env_of(stack))
    assert "ephemeral-storage" not in container(stack)["resources"]["limits"]


def test_tmpfs_is_an_emptydir_in_memory_at_memory_dir_sized_at_the_limit() -> None:
    stack = rendered("tmpfs")
    (volume,) = pod_of(stack)["volumes"]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": container(stack)["resources"]["limits"]["memory"]}
    (mount,) = container(stack)["volumeMounts"]
    assert mount == {"name": volume["name"], "mountPath": MEMORY_DIR}
    assert env_of(stack)["MEMORY_KIND"] == "tmpfs"
    assert env_of(stack)["MEMORY_DIR"] == MEMORY_DIR
    # Its pages are memory: no disk is asked for.
    assert "ephemeral-storage" not in container(stack)["resources"]["limits"]
    assert stack.exports["predictedSecondsToOomKill"] is not None


LIMIT_MIB = int(stack_config("dev")["memoryLimitMb"])


@pytest.mark.parametrize(("case", "written_mib"), [("pagecache", 2 * LIMIT_MIB), ("pagecache-ceiling", 1000)])
def test_pagecache_is_an_emptydir_on_disk_with_matching_ephemeral_storage(case: str, written_mib: int) -> None:
    stack = rendered(case)
    (volume,) = pod_of(stack)["volumes"]
    size = f"{written_mib + PAGECACHE_ROOM_MIB}Mi"
    assert volume["emptyDir"] == {"sizeLimit": size}
    (mount,) = container(stack)["volumeMounts"]
    assert mount == {"name": volume["name"], "mountPath": MEMORY_DIR}
    assert env_of(stack)["MEMORY_KIND"] == "pagecache"
    assert env_of(stack)["MEMORY_DIR"] == MEMORY_DIR
    resources = container(stack)["resources"]
    assert resources["requests"]["ephemeral-storage"] == resources["limits"]["ephemeral-storage"] == size
    (limits,) = stack.one(LIMIT_RANGE).inputs["spec"]["limits"]
    for field in ("default", "defaultRequest", "max"):
        assert limits[field] == {"memory": f"{LIMIT_MIB}Mi", "ephemeral-storage": size}
    # No kill comes, and the stack says so.
    assert stack.exports["predictedSecondsToOomKill"] is None


def test_supervised_passes_the_model_and_predicts_with_two_interpreters() -> None:
    single, supervised = rendered("anonymous"), rendered("supervised")
    assert env_of(supervised)["PROCESS_MODEL"] == "supervised"
    # Two interpreters are charged before the worker's first step: the worker's kill can only come sooner.
    assert (
        supervised.exports["predictedSecondsToOomKill"]["earliest"]
        <= single.exports["predictedSecondsToOomKill"]["earliest"]
    )
    assert env_of(rendered("supervised-tmpfs"))["MEMORY_KIND"] == "tmpfs"


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_case_passes_strict_validation_and_pod_security_restricted_volumes(case: str) -> None:
    stack = rendered(case)
    for version in VERSIONS:
        for manifest in stack.kubernetes_objects():
            kubernetes_validate.validate(manifest, version, strict=True)
    for volume in pod_of(stack).get("volumes", []):
        assert set(volume) - {"name"} <= RESTRICTED_VOLUMES


@pytest.mark.parametrize("case", ["tmpfs", "pagecache", "supervised"])
def test_checkov_finds_nothing_failing_for_each_kind(case: str, tmp_path: Path) -> None:
    checkov = checkov_command()
    require(checkov is not None, "checkov is not installed (make test installs it into venv-checkov)")
    assert checkov is not None
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump_all(rendered(case).kubernetes_objects(), sort_keys=False))
    result = subprocess.run(
        [checkov, "--config-file", str(PROJECT / ".checkov.yaml"), "-d", str(tmp_path), "-o", "json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    assert [c["check_id"] for c in report["results"]["failed_checks"]] == []
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("config", "key", "shown"),
    [
        ({"memoryKind": "heap"}, "memoryKind", "'heap'"),
        ({"memoryKind": "TMPFS"}, "memoryKind", "'TMPFS'"),
        ({"processModel": "forked"}, "processModel", "'forked'"),
        ({"processModel": "supervised", "memoryLimitMb": "40", "memoryIncrementMb": "10"}, "memoryIncrementMb", "10"),
        ({"processModel": "supervised", "memoryLimitMb": "256", "memoryCeilingMb": "230"}, "memoryCeilingMb", "230"),
        ({"memoryKind": "pagecache", "memoryCeilingMb": "-1"}, "memoryCeilingMb", "-1"),
    ],
)
def test_a_bad_kind_or_model_is_refused_in_one_line_and_declares_nothing(
    config: dict[str, str], key: str, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_refused_and_nothing_declared(config, key, shown, monkeypatch)


def test_pagecache_may_hold_above_the_limit_where_the_other_kinds_may_not() -> None:
    assert rendered("pagecache-ceiling").exports["predictedSecondsToOomKill"] is None
    with pytest.raises(ConfigError):
        render({"memoryCeilingMb": "1000"})
