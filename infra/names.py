"""The names the stack gives what it declares, for the program and for the tools that look for it (verify, the
alerts' manifest, the rehearsal), and the syntax of the labels a user gives it: stdlib only, so that a tool reads
them without Pulumi or YAML."""

from __future__ import annotations

import re
from typing import Final

PROJECT: Final = "oom-killer"  # the project, and its config namespace (`oom-killer:memoryLimitMb`)
APP: Final = "oom-killer"  # app.kubernetes.io/name on every object
CONTAINER: Final = "oom-killer"
WORKLOAD: Final = "oom-killer"  # the Deployment's name, or the DaemonSet's (scope=node)
VPA: Final = "oom-killer"  # the VerticalPodAutoscaler's (vpa)
VPA_API_VERSION: Final = "autoscaling.k8s.io/v1"
# scope=node with replicas=0: a label no node carries, in the pod's nodeSelector, so that the DaemonSet runs no pod
# and its objects stay, as a Deployment scaled to 0 does.
STOPPED_LABEL: Final = "oom-killer.io/stopped"
STOPPED_NODE_SELECTOR: Final = {STOPPED_LABEL: "true"}

# Kubernetes label syntax: a name of at most 63 characters, optionally prefixed by a DNS subdomain and a slash;
# a value of at most 63 characters, empty or alphanumeric at both ends.
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _valid_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _PREFIX.fullmatch(prefix)):
        return False
    return len(name) <= 63 and _NAME.fullmatch(name) is not None


def parse_labels(text: str) -> dict[str, str]:
    """`key=value,key=value` (as `kubectl label` writes them) into labels; ValueError says what is wrong."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals:
            raise ValueError(f"{item!r} is not key=value")
        if not _valid_key(key):
            raise ValueError(f"{key!r} is not a Kubernetes label name")
        if len(value) > 63 or not (value == "" or _NAME.fullmatch(value)):
            raise ValueError(f"{value!r} (for {key}) is not a Kubernetes label value")
        if key in labels:
            raise ValueError(f"{key!r} is given twice")
        labels[key] = value
    return labels
