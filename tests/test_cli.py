"""The `oom-killer` command as a user runs it: the console script pip installed in the virtualenv, run as a process,
with the exit codes of each subcommand's own table (make would turn them all into 2).

None of these needs a Docker engine, a cluster or the Pulumi CLI: the codes tested are the ones a process can reach
without them (a bad argument or value, nothing to run, no engine at DOCKER_HOST, no cluster at the kubeconfig).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from oomtools import clean, demo, doctor, verify
from oomtools.verify import observe
from tests.support import PROJECT, kubeconfig_nobody_answers, require

COMMAND = Path(sys.executable).parent / "oom-killer"
REINSTALL = "venv/bin/pip install --no-deps -e . (make demo does it)"


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def oom_killer(*args: str, env: dict[str, str] | None = None) -> Ran:
    require(COMMAND.exists(), f"no {COMMAND}: the project is not installed in this virtualenv: {REINSTALL}")
    environment = {**os.environ, "COLUMNS": "120", **(env or {})}
    environment.pop("_ARGCOMPLETE", None)
    # Run from elsewhere: the command finds the project through its installation, not the working directory.
    done = subprocess.run(
        [str(COMMAND), *args], capture_output=True, text=True, env=environment, cwd="/", timeout=120, check=False
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def one_line(ran: Ran, prefix: str) -> str:
    """The single line a failure printed on stderr, nothing on stdout and no traceback."""
    assert ran.stdout == ""
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def test_the_installed_command_runs_this_checkouts_code() -> None:
    # An editable install points at the checkout it was made in: a virtualenv reused from another clone (as CI links
    # its cached one) runs that clone's code until `pip install --no-deps -e .` is run again here.
    require(COMMAND.exists(), f"no {COMMAND}: {REINSTALL}")
    where = subprocess.run(
        [sys.executable, "-c", "import oomtools.cli; print(oomtools.cli.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
        check=True,
    ).stdout.strip()
    assert Path(where).resolve() == (PROJECT / "oomtools" / "cli.py").resolve(), f"stale install: {REINSTALL}"


def test_version_prints_the_projects_version() -> None:
    ran = oom_killer("--version")
    assert ran.returncode == 0
    version = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["version"]
    assert ran.stdout == f"oom-killer {version}\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ((), "oom-killer: the following arguments are required: COMMAND (see oom-killer --help)"),
        (
            ("up",),
            "oom-killer: argument COMMAND: invalid choice: 'up' (choose from 'demo', 'verify', 'resize', 'render', ",
        ),
        (("demo", "--bogus"), "demo: unrecognized arguments: --bogus (see oom-killer demo --help)"),
        (("demo", "--set", "memoryLimitMb"), "demo: --set takes key=value, got 'memoryLimitMb'"),
        (("verify", "--timeout", "soon"), "verify: argument --timeout: 'soon' is not a duration"),
        (("render", "--stack", "../x"), "render: --stack '../x': a stack name is letters"),
        (("render", "--stack", "devv"), "render: --stack devv: there is no Pulumi.devv.yaml (did you mean dev? "),
        # The issue's `--timeout -5m` said "expected one argument": now the option's own check names the value.
        (("verify", "--timeout", "-5m"), "verify: argument --timeout: '-5m' is not a duration"),
        (("doctor", "--stack", "devv"), "doctor: --stack devv: there is no Pulumi.devv.yaml"),
        (("clean", "--bogus"), "clean: unrecognized arguments: --bogus (see oom-killer clean --help)"),
    ],
)
def test_a_bad_argument_is_exit_2_in_one_line(args: tuple[str, ...], line: str) -> None:
    ran = oom_killer(*args)
    assert ran.returncode == 2 == demo.EXIT_BAD_CONFIG == verify.EXIT_BAD_ARGUMENTS
    one_line(ran, line)


def test_a_bad_set_value_is_exit_2_naming_the_setting_and_value() -> None:
    ran = oom_killer("demo", "--set", "memoryLimitMb=lots")
    assert ran.returncode == demo.EXIT_BAD_CONFIG
    one_line(ran, "demo: invalid config oom-killer:memoryLimitMb='lots': must be a whole number")
    typo = oom_killer("demo", "--set", "memoryIncremntMb=30")
    assert typo.returncode == demo.EXIT_BAD_CONFIG
    assert one_line(typo, "demo: ") == (
        "demo: --set memoryIncremntMb=30: not a setting of this project: did you mean memoryIncrementMb?"
    )


def test_nothing_to_run_is_exit_6() -> None:
    ran = oom_killer("demo", "--set", "replicas=0")
    assert ran.returncode == demo.EXIT_NOTHING_TO_RUN == 6
    one_line(ran, "demo: replicas=0: the dev stack declares no pod")


def test_no_engine_is_exit_3_naming_the_address(tmp_path: Path) -> None:
    socket = f"unix://{tmp_path}/no-engine.sock"
    ran = oom_killer("demo", env={"DOCKER_HOST": socket})
    assert ran.returncode == demo.EXIT_NO_ENGINE == 3
    one_line(ran, f"demo: no Docker engine answers at {socket} (DOCKER_HOST): No such file or directory")


def test_verify_with_a_kubeconfig_that_is_not_there_is_exit_2_naming_it(tmp_path: Path) -> None:
    outputs = json.dumps({"namespace": "oom-killer", "deploymentName": "oom-killer"})
    ran = oom_killer("verify", "--outputs", outputs, "--kubeconfig", str(tmp_path / "no-kubeconfig"))
    assert ran.returncode == verify.EXIT_BAD_ARGUMENTS == 2
    one_line(ran, f"verify: --kubeconfig {tmp_path / 'no-kubeconfig'}: there is no such file")


def test_verify_with_a_context_the_kubeconfig_lacks_is_exit_2_naming_those_it_has(tmp_path: Path) -> None:
    kubeconfig, _ = kubeconfig_nobody_answers(tmp_path, context="e2e")
    outputs = json.dumps({"namespace": "oom-killer", "workloadName": "oom-killer"})
    ran = oom_killer("verify", "--outputs", outputs, "--kubeconfig", str(kubeconfig), "--context", "nosuch")
    assert ran.returncode == verify.EXIT_BAD_ARGUMENTS
    one_line(ran, f"verify: --context nosuch: not in the kubeconfig ({kubeconfig}; its contexts: e2e)")


def test_verify_without_a_cluster_asks_again_until_the_timeout_then_is_exit_3_in_words(tmp_path: Path) -> None:
    kubeconfig, server = kubeconfig_nobody_answers(tmp_path)
    outputs = json.dumps({"namespace": "oom-killer", "workloadName": "oom-killer"})
    started = time.monotonic()
    ran = oom_killer("verify", "--outputs", outputs, "--kubeconfig", str(kubeconfig), "--timeout", "6s")
    waited = time.monotonic() - started
    assert ran.returncode == verify.EXIT_UNREACHABLE == 3
    said = f"verify: the cluster at {server} does not answer: Connection refused"
    assert ran.stdout == ""
    assert ran.stderr.splitlines() == [f"{said}; asking again every 2 s until --timeout", said], ran.stderr
    assert waited >= 6 - observe.RETRY_SECONDS, f"gave up after {waited:.1f} s of a 6 s --timeout"


def test_render_prints_the_objects_and_the_outputs_verify_reads() -> None:
    ran = oom_killer("render", "--set", "memoryLimitMb=64")
    assert ran.returncode == 0, ran.stderr
    objects = list(yaml.safe_load_all(ran.stdout))
    assert [o["kind"] for o in objects] == ["Namespace", "LimitRange", "NetworkPolicy", "Deployment"]
    container = objects[-1]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "64Mi"
    outputs = oom_killer("render", "--outputs")
    assert outputs.returncode == 0, outputs.stderr
    assert verify.stack_outputs("dev", outputs.stdout)["namespace"] == "oom-killer"
    refused = oom_killer("render", "--set", "replica=2")
    assert refused.returncode == 2
    one_line(refused, "render: --set replica=2: not a setting of this project: did you mean replicas?")


def test_render_gives_the_same_bytes_for_the_same_input_in_every_process() -> None:
    # The two runs differed in 88 of 115 lines (key order: the mock engine's protobuf maps follow the string
    # hash, which differs per process). A diff or a policy check needs the same bytes.
    runs = [oom_killer("render", env={"PYTHONHASHSEED": seed}) for seed in ("1", "2", "3")]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout
    first = yaml.safe_load_all(runs[0].stdout)
    assert all(list(o)[:3] == ["apiVersion", "kind", "metadata"] for o in first)  # as manifests are written
    outputs = [oom_killer("render", "--outputs", env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert outputs[0] == outputs[1]


def test_doctor_says_what_is_missing_one_line_each_and_exits_1(tmp_path: Path) -> None:
    socket = f"unix://{tmp_path}/no-engine.sock"
    ran = oom_killer("doctor", "--kubeconfig", str(tmp_path / "none"), env={"DOCKER_HOST": socket})
    assert ran.returncode == 1, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "doctor: ok    the dev stack's settings (make demo, make up): valid: memory limit 128Mi"
    assert lines[1].startswith(f"doctor: FAIL  Docker engine (make demo): no Docker engine answers at {socket}")
    assert lines[-1] == (
        f"doctor: FAIL  kube context (make up, make verify): --kubeconfig {tmp_path / 'none'}: there is no such file"
    )
    too_large = oom_killer("doctor", "--set", "memoryLimitMb=1048576", env={"DOCKER_HOST": socket})
    assert too_large.returncode == 1  # no engine to compare with, but the engine line fails


def test_clean_without_an_engine_is_exit_3_in_one_line(tmp_path: Path) -> None:
    socket = f"unix://{tmp_path}/no-engine.sock"
    ran = oom_killer("clean", env={"DOCKER_HOST": socket})
    assert ran.returncode == 3
    one_line(ran, f"clean: no Docker engine answers at {socket} (DOCKER_HOST): No such file or directory")


@pytest.mark.parametrize("command", ["demo", "verify", "render", "doctor", "clean"])
def test_each_subcommands_help_lists_its_exit_codes(command: str) -> None:
    ran = oom_killer(command, "--help")
    assert ran.returncode == 0
    assert ran.stdout.startswith(f"usage: oom-killer {command} ")
    listed = ran.stdout[ran.stdout.index("\nexit codes:\n") :]
    codes = {
        "demo": demo.CODE_MEANINGS,
        "verify": verify.CODE_MEANINGS,
        "doctor": doctor.CODE_MEANINGS,
        "clean": clean.CODE_MEANINGS,
    }.get(command, {0: "", 2: ""})
    assert [line.split()[0] for line in listed.splitlines()[1:] if line.startswith("  ") and line[2] != " "] == [
        str(code) for code in codes
    ]


@pytest.mark.parametrize(
    ("line", "offered"),
    [
        ("oom-killer ve", ["verify"]),
        ("oom-killer demo --st", ["--stack"]),
        ("oom-killer demo --set memoryL", ["memoryLimitMb="]),
        ("oom-killer demo --set memoryKind=t", ["memoryKind=tmpfs"]),
        ("oom-killer demo --stack d", ["dev"]),
        ("oom-killer render --stack ", ["dev"]),
        ("oom-killer cl", ["clean"]),
        ("oom-killer verify --wait", ["--wait-resolved"]),
    ],
)
def test_the_shell_completes_subcommands_options_and_settings(line: str, offered: list[str], tmp_path: Path) -> None:
    # What bash asks of a command registered with `eval "$(register-python-argcomplete oom-killer)"`.
    answer = tmp_path / "completions"
    environment = {
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
    }
    require(COMMAND.exists(), f"no {COMMAND}: {REINSTALL}")
    done = subprocess.run(
        [str(COMMAND)], env={**os.environ, **environment}, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert answer.read_text().split() == offered
