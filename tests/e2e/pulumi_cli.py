"""The user's own commands for the tests that run them: the Pulumi CLI, its Python language host and its kubernetes
and docker provider plugins (each built from its Go module or upstream source), on a copy of the project with a local
state backend of its own.

The project is copied to a folder of the test's (its stack files get written to, its workload gets changed), with
the project's virtualenv, as Pulumi.yaml names it.
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

from tests.e2e.cluster import Cluster, as_json
from tests.e2e.harness.state import BIN
from tests.support import PROJECT, require

PROJECT_FILES = (
    "Pulumi.yaml",
    "Pulumi.dev.yaml",
    "__main__.py",
    "Dockerfile",
    ".dockerignore",
    "requirements.txt",
    "requirements-tools.txt",  # with pyproject.toml: what make verify's virtualenv was made from
    "pyproject.toml",
    "Makefile",
)
PROJECT_DIRS = ("infra", "workload", "alerts")
PLUGINS = (
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-kubernetes",
    "pulumi-resource-docker",
)


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

    def make(self, target: str, *variables: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A make target as the README gives it, with its variables (`STACK=...`, `ARGS=...`);
        PULUMI_SKIP_CONFIRMATIONS answers the one prompt (--yes)."""
        result = subprocess.run(
            # Under `make e2e` this make is a sub-make, which would print its Entering/Leaving directory lines around
            # the target's own output.
            ["make", "--no-print-directory", target, *variables],
            cwd=self.project,
            env={**self.env, "PULUMI_SKIP_CONFIRMATIONS": "true"},
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"make {target} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def deployment(self, namespace: str) -> dict[str, Any]:
        apps = client.AppsV1Api(self.api)
        return as_json(self.api, apps.read_namespaced_deployment("oom-killer", namespace))

    def outputs(self, stack: str) -> dict[str, Any]:
        return dict(json.loads(self.run("stack", "output", "--json", "--stack", stack).stdout))


def project_with_cli(cluster: Cluster, work: Path) -> Pulumi:
    """A copy of the project in `work`, and the environment the user's commands run in: only what was built here on
    PATH, a local backend in `work`, the cluster's kubeconfig."""
    missing = [name for name in PLUGINS if not (BIN / name).exists()]
    require(not missing, f"not built: {missing} (tests/e2e/builds/build.sh)")
    # The provider builds FROM the stack's baseImage: one the engine has (no registry is reachable here).
    require(bool(os.environ.get("BASE_IMAGE")), "BASE_IMAGE is not set (an image with python3 the engine has)")
    require((PROJECT / "venv" / "bin" / "python").exists(), "no ./venv (make test makes it)")
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
    for marker in (".program-installed", ".tools-installed"):  # subsets of requirements-dev.txt
        (PROJECT / "venv" / "bin" / marker).touch()
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
    return Pulumi(project, env, cluster.api())


def namespace_gone(pulumi: Pulumi, namespace: str, timeout: float = 120.0) -> bool:
    core = client.CoreV1Api(pulumi.api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        time.sleep(1)
    return False


def session_processes(leader: int) -> dict[int, str]:
    """The processes still running in the session a CLI started as its leader (`start_new_session`), pid -> program
    name: the CLI, its language host and its provider plugins. The plugins run in process groups of their own (so
    that a terminal's Ctrl-C reaches the CLI alone): a signal to the CLI's group misses them. Zombies left out."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != leader:
                continue
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
        if argv0:
            found[int(entry.name)] = Path(argv0).name
    return found
