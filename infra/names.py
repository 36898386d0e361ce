"""The names the stack gives what it declares, for the program and for the tools that look for it (verify, the
alerts' manifest, the rehearsal): stdlib only and nothing imported, so that a tool reads them without Pulumi."""

from __future__ import annotations

from typing import Final

PROJECT: Final = "oom-killer"  # the project, and its config namespace (`oom-killer:memoryLimitMb`)
APP: Final = "oom-killer"  # app.kubernetes.io/name on every object
CONTAINER: Final = "oom-killer"
WORKLOAD: Final = "oom-killer"  # the Deployment's name, or the DaemonSet's (scope=node)
# scope=node with replicas=0: a label no node carries, in the pod's nodeSelector, so that the DaemonSet runs no pod
# and its objects stay, as a Deployment scaled to 0 does.
STOPPED_LABEL: Final = "oom-killer.io/stopped"
STOPPED_NODE_SELECTOR: Final = {STOPPED_LABEL: "true"}
