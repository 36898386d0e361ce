"""The fixtures every layer shares (the Docker engine, the dev stack's pod); helpers are in tests/support.py."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
from hypothesis import HealthCheck, settings

from oomtools.rehearsal import DeclaredPod, build_image, stack_pod
from tests.support import CONTAINER_LIMIT_MIB, docker_engine

# No deadline per example and no complaint that generating examples is slow: what the property tests hold is the
# answer, not its speed, and make test runs beside make e2e on two cores (a 200 ms deadline there fails at random).
# make mutation (tests/mutation.py) runs them through mutmut's trampolines, slower still, with its own name for it.
# Under make mutation the examples are derandomized, so that a score is the same from one run to the next.
settings.register_profile("oom-killer", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("mutation", settings.get_profile("oom-killer"), derandomize=True)
settings.load_profile("oom-killer")


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    """The Docker engine, one client for the whole session (it holds no state a test could leave behind)."""
    client = docker_engine()
    yield client
    client.close()


@pytest.fixture(scope="session")
def dev_pod(engine: docker.DockerClient) -> DeclaredPod:
    """The dev stack's pod with CONTAINER_LIMIT_MIB, its image built from the project's Dockerfile once a session
    (the tag is the build context's content, so every module gets the same image); tests must not change it."""
    pod = stack_pod("dev", {"memoryLimitMb": str(CONTAINER_LIMIT_MIB)})
    build_image(engine, pod)
    return pod
