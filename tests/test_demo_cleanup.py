"""No rehearsal leaves a container behind: `oom-killer demo` interrupted in each of its phases, a run whose process
died, a CPU limit the runtime alone would refuse, and --keep with `oom-killer clean`.

Needs a Docker engine (DOCKER_HOST or the default socket) and BASE_IMAGE where Docker Hub is out of reach, as
test_demo_engine.py does. Without an engine these skip, saying why; in CI they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import docker
import docker.errors
import pytest

from oomtools import clean, demo
from oomtools.rehearsal import (
    KEPT_LABEL,
    OWNER_LABEL,
    REHEARSAL_LABEL,
    DeclaredPod,
    leftovers,
    rehearsal_containers,
    run_options,
)
from tests.support import CONTAINER_LIMIT_MIB
from workload import logfmt

COMMAND = Path(sys.executable).parent / "oom-killer"
LIMIT = f"memoryLimitMb={CONTAINER_LIMIT_MIB}"


def containers_of(engine: docker.DockerClient, pid: int) -> list[str]:
    """The containers on the engine that the process `pid` of this host made, in any state."""
    found = engine.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={socket.gethostname()}:{pid}"})
    return [str(container.name) for container in found]


def _ctrl_c_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.usefixtures("dev_pod")  # the image built, so that each phase comes in seconds
@pytest.mark.parametrize(
    "when",
    [
        "demo: building ",  # the build (of an image the engine has: its steps go by fast)
        "demo: creating the container",  # the engine is making it: the Created container, 2 of 2
        "demo: started ",
        "  event=step step=1 ",  # the hog growing
        "verdict=",  # the container being removed beside the verdict
    ],
)
def test_ctrl_c_in_any_phase_leaves_no_container(engine: docker.DockerClient, when: str) -> None:
    running = subprocess.Popen(
        [str(COMMAND), "demo", "--set", LIMIT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C as a terminal's foreground command gets it. A job that a non-interactive shell started with `&` (as
        # CI starts make test) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the
        # demo never saw the interrupt and ran to its verdict, which failed this test in CI only.
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    assert running.stdout is not None
    seen = []
    for line in running.stdout:
        seen.append(line)
        if line.startswith(when):
            running.send_signal(signal.SIGINT)
            break
    else:
        pytest.fail(f"no line starting {when!r}: {seen}")
    _, err = running.communicate(timeout=120)
    assert containers_of(engine, running.pid) == [], f"left behind after Ctrl-C at {when!r}"
    if running.returncode == demo.EXIT_INTERRUPTED:
        assert err.splitlines()[-1] == "demo: interrupted; the container was removed (or never made)"
    else:  # the interrupt came as the run ended on its own
        assert when == "verdict=", err
        assert running.returncode == demo.EXIT_AS_PREDICTED, err


def test_a_dead_runs_container_is_removed_by_the_next_and_a_live_ones_is_not(
    engine: docker.DockerClient, dev_pod: DeclaredPod, tmp_path: Path
) -> None:
    # The later runs never cleaned up: a run killed with -9 cannot remove its own container.
    dead = subprocess.Popen(["true"])
    dead.wait()
    options = run_options(dev_pod, tmp_path / "termination-log")
    labels = {**options["labels"], OWNER_LABEL: f"{socket.gethostname()}:{dead.pid}"}
    orphan = engine.containers.create(**{**options, "labels": labels})
    ours = engine.containers.create(**options)  # this process's, alive
    try:
        assert [c.name for c in leftovers(engine)] == [orphan.name]
        assert demo.main(["--quiet", "--set", LIMIT]) == demo.EXIT_AS_PREDICTED
        names = [c.name for c in rehearsal_containers(engine)]
        assert orphan.name not in names
        assert ours.name in names
    finally:
        for container in (orphan, ours):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


@pytest.mark.usefixtures("dev_pod")
def test_a_cpu_limit_below_the_kubelets_smallest_runs_as_on_a_node(
    engine: docker.DockerClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # The cpuMillicores=5 (the settings allow 1 to 64000) was refused by runc, and left a container. The
    # kubelet raises a quota under 1 ms a period to 1 ms (10m): so does the rehearsal.
    before = {c.name for c in rehearsal_containers(engine)}
    assert demo.main(["--quiet", "--set", LIMIT, "--set", "cpuMillicores=5"]) == demo.EXIT_AS_PREDICTED
    assert logfmt.parse(capsys.readouterr().out.splitlines()[-1])["verdict"] == "OOMKilled"
    assert {c.name for c in rehearsal_containers(engine)} <= before


@pytest.mark.usefixtures("dev_pod")
def test_keep_leaves_the_container_for_inspection_until_clean(
    engine: docker.DockerClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--set", LIMIT, "--keep"]) == demo.EXIT_AS_PREDICTED
    said = capsys.readouterr().out.splitlines()[-1]
    assert said.startswith("demo: kept oom-killer-rehearsal-")
    name = said.split()[2].rstrip(":")
    kept = engine.containers.get(name)
    assert kept.attrs["State"]["OOMKilled"] is True  # what docker inspect shows
    assert kept.labels[KEPT_LABEL] == "true"
    assert kept.labels[REHEARSAL_LABEL] == "true"
    assert name not in [c.name for c in leftovers(engine)]  # the next run's sweep leaves it
    assert clean.main([]) == clean.EXIT_CLEAN
    assert f"clean: removed container {name}" in capsys.readouterr().out.splitlines()
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(name)  # clean returns once the engine has removed it
