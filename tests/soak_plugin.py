"""What `make soak` (tests/soak.py) adds to the pytest sessions it runs, as `-p tests.soak_plugin`; no other run
loads it. Each run of a test starts as the first would on a fresh machine: the page cache dropped (the charge at a
hog's start includes the interpreter's cached files, which the kernel reclaims before it kills), and on the test
cluster a pod of the Deployment that has not yet been killed (the back-off test counts restarts from the first).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

DROP_CACHES = Path("/proc/sys/vm/drop_caches")
FRESH_POD_TIMEOUT = 120.0


def drop_page_cache() -> None:
    os.sync()  # dirty pages are written first, so that all of the cache can go
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as error:
        pytest.fail(f"make soak drops the page cache before each test, and cannot here (it needs root): {error}")


def fresh_pod(deployed: Any) -> None:
    """Scale the Deployment to 0, wait for its pods to be gone, drop the page cache, scale it back: the next pod
    starts cold, with no restarts, as the first did."""
    from kubernetes import client

    apps = client.AppsV1Api(deployed.api)
    (deployment,) = apps.list_namespaced_deployment(deployed.namespace).items
    assert deployment.metadata is not None
    assert deployment.spec is not None
    name, replicas = str(deployment.metadata.name), deployment.spec.replicas
    apps.patch_namespaced_deployment_scale(name, deployed.namespace, {"spec": {"replicas": 0}})
    deadline = time.monotonic() + FRESH_POD_TIMEOUT
    while deployed.core.list_namespaced_pod(deployed.namespace, label_selector=deployed.selector).items:
        assert time.monotonic() < deadline, f"the Deployment's pods were still there {FRESH_POD_TIMEOUT:.0f} s on"
        time.sleep(0.5)
    drop_page_cache()
    apps.patch_namespaced_deployment_scale(name, deployed.namespace, {"spec": {"replicas": replicas}})


@pytest.fixture(autouse=True)
def soak_run_starts_cold(request: pytest.FixtureRequest) -> None:
    if "deployed" in request.fixturenames:
        fresh_pod(request.getfixturevalue("deployed"))
    else:
        drop_page_cache()
