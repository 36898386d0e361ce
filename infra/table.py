"""The stack's settings as one table: a row per config key (its type, default, bounds, choices, parser, whether it is
a secret, and what it does, in a line for Pulumi.yaml and in a cell for docs/configuration.md), then the rules
between keys, each by name. Each key is written here once; infra/settings.py reads the stack's config through it,
`oom-killer demo --set` checks a value with it, and Pulumi.yaml's config block and the docs' table are generated
from it (`python -m oomtools.config_files --write`; `make test` fails while either is stale).

Stdlib only (the labels' parser is imported when a value is parsed): the command's argument checks and shell
completion read it without Pulumi.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from infra.names import PROJECT, parse_labels
from workload.kinds import (
    BASELINE_MAX_MIB,
    MEMORY_KINDS,
    PROCESS_MODELS,
    SINGLE,
    SUPERVISED,
    memory_kind,
    process_model,
)
from workload.predict import PAGE_TABLE_DIVISOR
from workload.settings import MAX_CEILING_MIB, MAX_CEILING_PCT, MAX_INTERVAL_MS

MAX_MIB: Final = MAX_CEILING_MIB  # 1 TiB, the workload's own bound: past this a value is a typo, not a test
# Docker refuses a smaller memory limit ("Minimum memory limit allowed is 6MB"), and runc under a kubelet too.
RUNTIME_MIN_LIMIT_MIB: Final = 6
MIN_LIMIT_MIB: Final = max(RUNTIME_MIN_LIMIT_MIB, BASELINE_MAX_MIB + 2)  # the baseline, a 1 MiB step, its page tables
MAX_REPLICAS: Final = 100
MAX_CPU_MILLICORES: Final = 64_000
# Where the memory and CPU limits are declared: on the container, or on the pod (spec.resources, beta and on by
# default from Kubernetes 1.34), with the container left without one of its own.
LIMIT_SCOPES: Final = ("container", "pod")
SCOPES: Final = ("deployment", "node")  # a Deployment of `replicas` pods, or a DaemonSet of one pod per node
# A VerticalPodAutoscaler over the workload (vpa), by its updateMode, or none; and its maxAllowed memory by default.
VPA_MODES: Final = ("none", "Auto", "Recreate", "InPlaceOrRecreate")
VPA_MAX_FACTOR: Final = 4  # vpaMaxMb=0: four times memoryLimitMb, room for VPA's OOM bump of up to 3x
TAINT_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# What the supervised model's bounds say of its interpreters (the limit less the baseline of each).
_SUPERVISED_ROOM: Final = f"less {SUPERVISED.baseline_max_mib} with processModel=supervised (two interpreters)"

# RFC 1123 label, as Kubernetes requires of a namespace name.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# os/arch[/variant], as docker build --platform takes it.
_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")

Value = bool | int | str | tuple[Any, ...]


class Invalid(ValueError):
    """A value the table refuses: the key, the value as the refusal shows it, and why (one line)."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        super().__init__(config_refusal(key, value, reason))
        self.key = key
        self.value = value
        self.reason = reason


def config_refusal(key: str, value: object, reason: str) -> str:
    """The one line a refused config value gets, from the program (`pulumi up`) and from `--set` alike."""
    return f"invalid config {PROJECT}:{key}={value!r}: {reason}"


@dataclass(frozen=True)
class Toleration:
    """One toleration, from kubectl taint's syntax: `key=value:Effect` (operator Equal), `key:Effect` (Exists);
    without `:Effect`, every effect."""

    key: str
    value: str | None  # None: operator Exists
    effect: str  # "": every effect

    @property
    def operator(self) -> str:
        return "Exists" if self.value is None else "Equal"


def parse_label_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """`key=value,...` (Kubernetes labels) in the order given; ValueError says what is wrong."""
    return tuple(parse_labels(text).items())


def parse_tolerations(text: str) -> tuple[Toleration, ...]:
    """`key=value:Effect,key:Effect,key=value,key` into tolerations; ValueError says what is wrong.

    Keys and values are label keys and values: a taint's are the same syntax, so the labels' parser checks them.
    """
    tolerations = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        rest, colon, effect = (part.strip() for part in item.partition(":"))
        if colon and effect not in TAINT_EFFECTS:
            raise ValueError(f"{effect!r} (for {rest}) is not an effect: {', '.join(TAINT_EFFECTS)}")
        equals = "=" in rest
        ((key, value),) = parse_label_pairs(rest if equals else f"{rest}=")
        tolerations.append(Toleration(key, value if equals else None, effect))
    return tuple(tolerations)


def _no_white_space(text: str) -> bool:
    return re.search(r"\s", text) is None


_IMAGE_REFERENCE: Final = ((_no_white_space, "an image reference has no white space"),)


@dataclass(frozen=True)
class Setting:
    """One config key: what it takes and what it does."""

    key: str
    default: bool | int | str
    summary: str  # Pulumi.yaml's description: plain text, one paragraph
    doc: str  # the docs' table cell: Markdown
    lowest: int = 0  # integers: the bounds, both included
    highest: int = 0
    bounds_note: str = ""  # after the bounds in a refusal: the unit, or why
    choices: tuple[str, ...] = ()
    parser: Callable[[str], Value] | None = None  # text into the value StackSettings holds; ValueError says why not
    parser_says: str = ""  # what a refusal of the parser's says first
    checks: tuple[tuple[Callable[[str], bool], str], ...] = ()  # (holds for a good text, what a refusal says)
    secret: bool = False  # stored encrypted (pulumi config set --secret): a plaintext value is refused

    @property
    def type(self) -> str:
        """Its type as Pulumi.yaml declares it."""
        if isinstance(self.default, bool):
            return "boolean"
        return "integer" if isinstance(self.default, int) else "string"

    @property
    def field(self) -> str:
        """Its name in StackSettings: memoryIncrementMb is memory_increment_mb."""
        return re.sub(r"[A-Z]", lambda upper: f"_{upper.group().lower()}", self.key)

    @property
    def default_text(self) -> str:
        """The default as the config would hold it."""
        return str(self.default).lower() if isinstance(self.default, bool) else str(self.default)

    def values(self) -> tuple[str, ...]:
        """The values a shell may complete: the choices, or a boolean's two."""
        return ("true", "false") if self.type == "boolean" else self.choices

    def parse(self, raw: str | None) -> Value:
        """The value of this key's text (None: unset, the default); Invalid says why not, naming key and value.

        Integers and booleans as Pulumi's own Config.get_int and get_bool read them; text with white space at the
        ends removed.
        """
        text = self.default_text if raw is None else raw
        if self.type == "integer":
            try:
                number = int(text)
            except ValueError:
                raise Invalid(self.key, text, "must be a whole number") from None
            if not self.lowest <= number <= self.highest:
                raise Invalid(self.key, number, f"must be from {self.lowest} to {self.highest}{self.bounds_note}")
            return number
        if self.type == "boolean":
            if text in ("true", "True", "false", "False"):
                return text.lower() == "true"
            raise Invalid(self.key, text, "must be true or false")
        text = text.strip()
        if self.choices and text not in self.choices:
            raise Invalid(self.key, text, f"must be one of {', '.join(self.choices)}")
        for holds, reason in self.checks:
            if not holds(text):
                raise Invalid(self.key, text, reason)
        if self.parser is None:
            return text
        try:
            return self.parser(text)
        except ValueError as error:
            raise Invalid(self.key, text, f"{self.parser_says}: {error}") from error


ROWS: Final = (
    Setting(
        "memoryIncrementMb",
        10,
        f"MiB the workload adds (and writes) per step, from 1; at most memoryLimitMb less {BASELINE_MAX_MIB} (the "
        f"interpreter's baseline), {_SUPERVISED_ROOM}, and less the step's page tables (1/{PAGE_TABLE_DIVISOR} of it).",
        "MiB the workload adds (and writes, so it is resident) per step; at most `memoryLimitMb` less "
        f"{BASELINE_MAX_MIB}, less {SUPERVISED.baseline_max_mib} with `processModel=supervised`, and less the step's "
        f"page tables (1/{PAGE_TABLE_DIVISOR} of it: 239 for a 256 MiB limit)",
        lowest=1,
        highest=MAX_MIB,
        bounds_note=" (MiB)",
    ),
    Setting(
        "memoryLimitMb",
        256,
        "The container's memory limit and request in MiB (Guaranteed QoS; memoryRequestMb may set a lower request); "
        "also the namespace LimitRange's max. "
        f"From {MIN_LIMIT_MIB}, room for the interpreter (up to {BASELINE_MAX_MIB} MiB) and a step, to {MAX_MIB}.",
        f"the container's memory limit and request (a lower request: `memoryRequestMb`), in MiB, from "
        f"{MIN_LIMIT_MIB} (room for the interpreter and a step; runtimes refuse less than {RUNTIME_MIN_LIMIT_MIB}) to "
        f"{MAX_MIB}; also the LimitRange's default and max",
        lowest=MIN_LIMIT_MIB,
        highest=MAX_MIB,
        bounds_note=f" (MiB): the interpreter alone takes up to {BASELINE_MAX_MIB} MiB (and container runtimes "
        f"refuse less than {RUNTIME_MIN_LIMIT_MIB})",
    ),
    Setting(
        "memoryRequestMb",
        0,
        "The container's memory request in MiB (with limitScope=pod the pod's); 0 means equal to memoryLimitMb "
        "(Guaranteed QoS). From 1 to memoryLimitMb: below the limit the pod is Burstable (its CPU request stays its "
        "limit), which the kubelet evicts before Guaranteed pods under node memory pressure and, with LimitedSwap on "
        "a cgroup v2 node, gives swap in proportion to its request. Not with vpa.",
        "the container's memory request, in MiB (with `limitScope=pod` the pod's); `0` means equal to "
        "`memoryLimitMb` (Guaranteed QoS); from 1 to `memoryLimitMb`: below the limit the pod is Burstable (its CPU "
        "request stays its limit), evicted before Guaranteed pods under node memory pressure and, on a cgroup v2 "
        "node with `LimitedSwap`, given swap in proportion to the request; also the LimitRange's default request; "
        "not with `vpa` ([a Burstable pod](cluster.md#a-burstable-pod))",
        lowest=0,
        highest=MAX_MIB,
        bounds_note=" (MiB)",
    ),
    Setting(
        "incrementIntervalMs",
        1000,
        f"Milliseconds between steps, from 0 (as fast as it can) to {MAX_INTERVAL_MS} (a day).",
        f"milliseconds between steps; `0` grows as fast as it can; at most {MAX_INTERVAL_MS} (a day)",
        lowest=0,
        highest=MAX_INTERVAL_MS,
    ),
    Setting(
        "memoryCeilingMb",
        0,
        "Stop growing at this many MiB and hold, never killed (0 means no ceiling); at most memoryLimitMb less "
        f"{BASELINE_MAX_MIB}, room for the interpreter's baseline, {_SUPERVISED_ROOM}; with vpa, vpaMaxMb less the "
        f"same (killed at the limit, it holds once VPA gives it room). With memoryKind=pagecache, which is never "
        f"killed, up to {MAX_MIB} (0 holds at twice the limit).",
        'stop growing at this many MiB and hold, never killed (a "near the limit" test); at most `memoryLimitMb` '
        f"less {BASELINE_MAX_MIB}, less {SUPERVISED.baseline_max_mib} with `processModel=supervised`; with `vpa`, "
        "`vpaMaxMb` less the same (killed at the limit, it holds once VPA gives it room); with "
        f"`memoryKind=pagecache` up to {MAX_MIB}; `0` means none",
        lowest=0,
        highest=MAX_MIB,
        bounds_note=" (MiB)",
    ),
    Setting(
        "memoryCeilingPct",
        0,
        "Stop growing when the container's memory charge reaches this percent of its memory limit, and hold, never "
        f"killed (0 means none); from 1 to {MAX_CEILING_PCT}. The hog allocates what the percent leaves above its own "
        "start-up charge, to the MiB, and reports the charge it holds at against the one asked. One ceiling: not with "
        "memoryCeilingMb.",
        "hold when the container's memory charge reaches this percent of its limit, never killed (an 80 to 95% "
        f"test); from 1 to {MAX_CEILING_PCT}; its `holding` line gives `asked_mib` and `achieved_mib` ([sizing in "
        "percent](memory-kinds.md#sizing-in-percent-of-the-limit)); not with `memoryCeilingMb`; `0` means none",
        lowest=0,
        highest=MAX_CEILING_PCT,
        bounds_note=" (percent of memoryLimitMb)",
    ),
    Setting(
        "cpuMillicores",
        100,
        f"The container's CPU request and limit in millicores, from 1 to {MAX_CPU_MILLICORES}.",
        f"the container's CPU request and limit, in millicores, from 1 to {MAX_CPU_MILLICORES}",
        lowest=1,
        highest=MAX_CPU_MILLICORES,
    ),
    Setting(
        "limitScope",
        LIMIT_SCOPES[0],
        "container (the limits and requests on the container, as always) or pod (on the pod's spec.resources, the "
        "container without its own; Kubernetes 1.34 or newer, where PodLevelResources is on by default; the "
        "LimitRange then caps the pod). Still Guaranteed QoS either way (Burstable with memoryRequestMb).",
        "`container`: memory and CPU limits and requests on the container; `pod`: on the pod (`spec.resources`, "
        "Kubernetes 1.34+ where `PodLevelResources` is on by default), the container with none of its own, and the "
        "LimitRange's max on the pod; Guaranteed QoS either way (Burstable with `memoryRequestMb`), and the hog "
        "reads the pod's limit from its cgroup or, where cgroup v2 hides it, from the Downward API ([pod-level "
        "limits](cluster.md#pod-level-limits))",
        choices=LIMIT_SCOPES,
    ),
    Setting(
        "vpa",
        VPA_MODES[0],
        "Declare a VerticalPodAutoscaler (autoscaling.k8s.io/v1: VPA must be installed) over the workload with this "
        "updateMode: none (no VPA), Auto, Recreate or InPlaceOrRecreate. It sizes the hog's memory alone, up to "
        "vpaMaxMb, which also becomes the LimitRange's max; give the hog a memoryCeilingMb above its limit to see "
        "whether VPA's answer to its OOM kills lets it hold. limitScope=container only.",
        "declare a `VerticalPodAutoscaler` (VPA must be installed) over the workload with this `updateMode`: "
        "`Auto`, `Recreate` or `InPlaceOrRecreate` (`none`: no VPA); it sizes memory alone, up to `vpaMaxMb` (also "
        "the LimitRange's max); with a `memoryCeilingMb` above the limit, `make verify ARGS=--vpa` says whether "
        "VPA's answer to the kill lets the hog hold ([VPA](cluster.md#vpas-answer-to-an-oom))",
        choices=VPA_MODES,
    ),
    Setting(
        "vpaMaxMb",
        0,
        f"With vpa: the most memory VPA may give the hog, in MiB (its maxAllowed, and the LimitRange's max); at least "
        f"memoryLimitMb; 0 means {VPA_MAX_FACTOR} times memoryLimitMb.",
        "with `vpa`: the most memory VPA may give the hog, in MiB (its `maxAllowed`, and the LimitRange's max); at "
        f"least `memoryLimitMb`; `0` means {VPA_MAX_FACTOR} times `memoryLimitMb`",
        lowest=0,
        highest=MAX_MIB,
        bounds_note=" (MiB)",
    ),
    Setting(
        "namespace",
        "",
        "The namespace the stack creates for the workload (and deletes on destroy), or with createNamespace=false an "
        "existing one of its own it deploys into; never default or kube-*. Empty means oom-killer-<stack> (the dev "
        "stack sets oom-killer).",
        "the namespace the stack creates, and deletes on destroy (with `createNamespace=false`: an existing one of "
        "its own it deploys into); never `default` or `kube-*`; empty means `oom-killer-<stack>` (the dev stack sets "
        "`oom-killer`)",
        checks=(
            (
                lambda text: text == "" or (len(text) <= 63 and _DNS_LABEL.fullmatch(text) is not None),
                "must be a DNS label: at most 63 lowercase letters, digits and '-', starting and ending alphanumeric",
            ),
        ),
    ),
    Setting(
        "createNamespace",
        True,
        "Create the namespace (and delete it on destroy). false deploys into an existing namespace, as a cluster "
        "admin made it with infra/rights.yaml, and leaves it on destroy; the deployer then needs no right on any "
        "cluster-scoped object (docs/rights.md).",
        "`true`: the stack creates `namespace`, with Pod Security `restricted`, and `pulumi destroy` deletes it. "
        "`false`: it declares no Namespace and deploys into the one a cluster admin made (`infra/rights.yaml`, with "
        "the same labels), which `pulumi destroy` leaves; the deployer then needs no right on any cluster-scoped "
        "object ([rights it needs](rights.md))",
    ),
    Setting(
        "replicas",
        1,
        f"How many pods to run, from 0 (keeps the objects and stops the pods) to {MAX_REPLICAS}; with scope=node only "
        "1 (a pod per node) or 0.",
        f"how many pods, at most {MAX_REPLICAS}; `0` keeps the objects and stops the pods; with `scope=node` only `1` "
        "(a pod per node) or `0`",
        lowest=0,
        highest=MAX_REPLICAS,
    ),
    Setting(
        "image",
        "",
        "A prebuilt image to run instead of building one (e.g. registry.example.com/oom-killer:1.0).",
        "a prebuilt image to run instead of building one",
        checks=_IMAGE_REFERENCE,
    ),
    Setting(
        "imageRepository",
        "",
        "Where to push the built image (e.g. ghcr.io/acme/oom-killer); empty builds it locally and pushes nothing.",
        "where to push the build, e.g. `ghcr.io/acme/oom-killer`; empty builds locally and pushes nothing",
        checks=(
            *_IMAGE_REFERENCE,
            (
                lambda text: ":" not in text.rpartition("/")[2] and "@" not in text,
                "is a repository without a tag or digest (the program tags each build itself)",
            ),
        ),
    ),
    Setting(
        "registryUsername",
        "",
        "Username for imageRepository's registry; empty uses your docker login.",
        "user for `imageRepository`'s registry; empty uses the credentials of your `docker login`",
    ),
    Setting(
        "registryPassword",
        "",
        "Password or token for imageRepository's registry; set it with --secret (the program refuses it in plaintext).",
        "password or token for that registry; set it with `--secret` (a plaintext one is refused)",
        secret=True,
    ),
    Setting(
        "platform",
        "",
        "The platform the image is built for (os/arch), matching your nodes; required with imageRepository. Empty "
        "builds a local image for the Docker engine's own platform.",
        "the platform the image is built for, your nodes' `os/arch`; required with `imageRepository`; empty builds a "
        "local image for the Docker engine's own platform",
        checks=(
            (
                lambda text: text == "" or _PLATFORM.fullmatch(text) is not None,
                "must be os/arch, e.g. linux/amd64, or empty (a local build: the Docker engine's own)",
            ),
        ),
    ),
    Setting(
        "baseImage",
        "",
        "The Dockerfile's BASE_IMAGE (any image with python3 >= 3.11); empty keeps the pinned official slim image.",
        "the Dockerfile's `BASE_IMAGE` (any image with `python3` 3.11+); empty keeps the pinned official slim image",
        checks=_IMAGE_REFERENCE,
    ),
    Setting(
        "memoryKind",
        MEMORY_KINDS[0],
        "What the workload fills: anonymous (its own heap, killed at the limit), tmpfs (files in an emptyDir with "
        "medium Memory, charged to the limit and killed there), or pagecache (files in an emptyDir on disk: page "
        "cache, reclaimed at the limit, never killed; holds at memoryCeilingMb or twice the limit).",
        "what the workload fills: `anonymous` (its own heap), `tmpfs` (files in an `emptyDir` with `medium: Memory` "
        "at `/data`, sized at the limit), `pagecache` (files in an `emptyDir` on the node's disk at `/data`; the "
        "container gets a matching `ephemeral-storage` request and limit); see [memory kinds and process "
        "models](memory-kinds.md). With `pagecache`, `memoryCeilingMb` may exceed the limit (`0`: hold at twice the "
        "limit)",
        choices=MEMORY_KINDS,
    ),
    Setting(
        "processModel",
        PROCESS_MODELS[0],
        f"{SINGLE.name} ({SINGLE.runs}) or {SUPERVISED.name} ({SUPERVISED.runs}: with cgroup v2's "
        "memory.oom.group=1 the whole container dies instead).",
        "`single` (PID 1 is the hog) or `supervised` (PID 1 runs the hog as a worker and restarts it after each "
        "kill, as gunicorn or php-fpm do); supervised needs room for two interpreters: step and ceiling at most "
        f"`memoryLimitMb` less {SUPERVISED.baseline_max_mib}",
        choices=PROCESS_MODELS,
    ),
    Setting(
        "prometheusRule",
        False,
        "Declare the alerts of alerts/oom-killer.rules.yaml as a monitoring.coreos.com/v1 PrometheusRule in the "
        "stack's namespace (needs the Prometheus Operator's CRD in the cluster).",
        "declare the alerts of `alerts/oom-killer.rules.yaml` as a `monitoring.coreos.com/v1` `PrometheusRule` in "
        "the stack's namespace (needs the Prometheus Operator's CRD; see [checking your alerts](alerts.md))",
    ),
    Setting(
        "prometheusRuleLabels",
        "",
        "Labels for the PrometheusRule, key=value,... as the Prometheus Operator's ruleSelector matches them (e.g. "
        "release=kube-prometheus-stack); only with prometheusRule.",
        "the `PrometheusRule`'s labels, `key=value,...`, for the Operator's `ruleSelector` (e.g. "
        "`release=kube-prometheus-stack`); only with `prometheusRule`",
        parser=parse_label_pairs,
        parser_says="must be key=value,... (Kubernetes labels)",
    ),
    Setting(
        "scope",
        SCOPES[0],
        "deployment (a Deployment of replicas pods) or node (a DaemonSet: one pod on every node the pod may go to, "
        "with nodeSelector and tolerations, replaced one node at a time; replicas 1, or 0 to stop the pods).",
        "`deployment`: a Deployment of `replicas` pods, wherever the scheduler puts them; `node`: a DaemonSet of the "
        "same pod, one on every node it may go to (`nodeSelector`, `tolerations`), replaced one node at a time "
        "(`RollingUpdate`, `maxUnavailable: 1`). With `node`, `replicas` is `1`, or `0` to keep the objects and stop "
        'the pods: the pod\'s `nodeSelector` then also asks for the label `oom-killer.io/stopped: "true"`, which no '
        "node carries",
        choices=SCOPES,
    ),
    Setting(
        "nodeSelector",
        "",
        "Labels the pod's node must carry, key=value,... (the pod template's nodeSelector, e.g. pool=oom-lab), for "
        "either scope.",
        "labels the pod's node must carry, `key=value,...` (e.g. `pool=oom-lab`), as the pod's `nodeSelector`, for "
        "either scope",
        parser=parse_label_pairs,
        parser_says="must be key=value,... (labels the nodes carry)",
    ),
    Setting(
        "tolerations",
        "",
        "Taints the pod tolerates, comma-separated in kubectl taint's syntax: key=value:Effect (Equal), key:Effect "
        "(Exists), key=value or key (every effect); Effect is NoSchedule, PreferNoSchedule or NoExecute.",
        "taints the pod tolerates, comma-separated in `kubectl taint`'s syntax: `key=value:Effect` (operator "
        "`Equal`), `key:Effect` (operator `Exists`), `key=value` or `key` (every effect); `Effect` is `NoSchedule`, "
        "`PreferNoSchedule` or `NoExecute`. For either scope, e.g. `dedicated=oom-lab:NoSchedule`",
        parser=parse_tolerations,
        parser_says="must be key=value:Effect, key:Effect, key=value or key, comma-separated",
    ),
)
SETTINGS: Final = {row.key: row for row in ROWS}


def nearest_setting(key: str) -> str | None:
    """The declared setting a mistyped key most likely meant (`memoryIncremntMb`: memoryIncrementMb), or None."""
    by_lower = {name.lower(): name for name in SETTINGS}
    found = difflib.get_close_matches(key.lower(), by_lower, n=1)
    return by_lower[found[0]] if found else None


def default_namespace(stack: str) -> str:
    """The namespace a stack gets when it names none: `oom-killer-<stack>`, so two stacks on one cluster do not
    collide (the dev stack names `oom-killer` in Pulumi.dev.yaml). The stack name made a DNS label, as far as it goes.
    """
    label = re.sub(r"[^a-z0-9-]+", "-", f"{PROJECT}-{stack}".lower())
    return label[:63].strip("-")


# The rules between keys: each reads the values (by config key, parsed, the namespace resolved) and says why it
# refuses the value of its key, or None.
Values = Mapping[str, Any]
_COUNTED: Final = {2: "two", 3: "three"}


def _interpreters(count: int) -> str:
    return f"for each of {_COUNTED.get(count, str(count))} interpreters"


def step_room_mib(limit_mib: int, model_name: str) -> int:
    """The largest step the limit leaves room for after the largest baseline: the step and the page tables it brings
    (1/PAGE_TABLE_DIVISOR of it) must fit, or even the first step meets the limit (workload/predict.py)."""
    return process_model(model_name).room_mib(limit_mib) * PAGE_TABLE_DIVISOR // (PAGE_TABLE_DIVISOR + 1)


def _step_leaves_room(values: Values) -> str | None:
    model, limit = process_model(values["processModel"]), values["memoryLimitMb"]
    room = step_room_mib(limit, model.name)
    if values["memoryIncrementMb"] <= room:
        return None
    if model.interpreters == 1:
        return (
            f"must be at most {room}: memoryLimitMb ({limit}) less up to {BASELINE_MAX_MIB} MiB the interpreter "
            "takes and the step's page tables, or the container is killed in its first step"
        )
    return (
        f"must be at most {room} for processModel={model.name}: memoryLimitMb ({limit}) less up to "
        f"{BASELINE_MAX_MIB} MiB {_interpreters(model.interpreters)} and the step's page tables, or the worker is "
        "killed in its first step"
    )


def _ceiling_leaves_room(values: Values) -> str | None:
    # A kind the kernel never kills (page cache) may hold above the limit: the row's bound is its only one.
    if not memory_kind(values["memoryKind"]).killed:
        return None
    model, limit = process_model(values["processModel"]), values["memoryLimitMb"]
    room = model.room_mib(limit)
    if values["memoryCeilingMb"] <= room:
        return None
    if values["vpa"] != "none":  # killed at the limit, it holds where VPA gives it the room
        most = vpa_max_mib(values)
        if values["memoryCeilingMb"] <= model.room_mib(most):
            return None
        who = "the interpreter takes" if model.interpreters == 1 else _interpreters(model.interpreters)
        return (
            f"must be 0 (no ceiling) or at most {model.room_mib(most)} with vpa: VPA's most (vpaMaxMb, {most}) less "
            f"up to {model.baseline_max_mib} MiB {who}, so that it can hold once VPA gives it the room"
        )
    if model.interpreters == 1:
        return (
            f"must be 0 (no ceiling) or at most {room}: memoryLimitMb ({limit}) less up to {BASELINE_MAX_MIB} MiB "
            "the interpreter takes, so that it surely holds there (for a kill, set 0)"
        )
    return (
        f"must be 0 (no ceiling) or at most {room} for processModel={model.name}: memoryLimitMb ({limit}) less up "
        f"to {BASELINE_MAX_MIB} MiB {_interpreters(model.interpreters)}, so that it surely holds there"
    )


def _one_ceiling(values: Values) -> str | None:
    if not (values["memoryCeilingPct"] and values["memoryCeilingMb"]):
        return None
    return (
        f"must be 0 while memoryCeilingMb is set ({values['memoryCeilingMb']}): one ceiling, in MiB or in percent of "
        "the limit (`pulumi config rm memoryCeilingMb`)"
    )


def _percent_leaves_room(values: Values) -> str | None:
    """The percent must reach past the largest baseline, or the hog holds at once having allocated nothing."""
    pct, limit = values["memoryCeilingPct"], values["memoryLimitMb"]
    model = process_model(values["processModel"])
    if not pct or limit * pct > model.baseline_max_mib * 100:
        return None
    lowest = model.baseline_max_mib * 100 // limit + 1
    who = "the interpreter takes" if model.interpreters == 1 else _interpreters(model.interpreters)
    return (
        f"must be 0 (none) or at least {lowest}: {pct}% of memoryLimitMb ({limit}) is within the up to "
        f"{BASELINE_MAX_MIB} MiB {who} before the first step, so it would hold having allocated nothing"
    )


def _one_pod_per_node(values: Values) -> str | None:
    if values["scope"] != "node" or values["replicas"] in (0, 1):
        return None
    return "must be 1 (or 0 to stop the pods) for scope=node: scope=node runs one pod per selected node"


def _namespace_of_its_own(values: Values) -> str | None:
    # The stack creates its namespace and deletes it on destroy: never the cluster's own. Nor, where an admin made
    # it (createNamespace=false), a shared one: the LimitRange and the deny-all NetworkPolicy hold every pod in it.
    namespace = values["namespace"]
    if namespace != "default" and not namespace.startswith("kube-"):
        return None
    if values["createNamespace"]:
        return "must be a namespace of its own: the stack creates it and `pulumi destroy` deletes it with all it holds"
    return "must be a namespace of its own: its LimitRange and deny-all NetworkPolicy hold every pod in it"


def _prebuilt_or_built(values: Values) -> str | None:
    if values["image"] and values["imageRepository"]:
        return "is a prebuilt image, so nothing is built to push to imageRepository: set only one of the two"
    return None


def _push_names_platform(values: Values) -> str | None:
    if values["platform"] or not values["imageRepository"]:
        return None
    return (
        "must name your nodes' os/arch for a pushed image, e.g. `pulumi config set platform linux/amd64` "
        "(kubectl get nodes -o jsonpath='{.items[*].status.nodeInfo.architecture}')"
    )


def _credentials_together(values: Values) -> str | None:
    if bool(values["registryUsername"]) == bool(values["registryPassword"]):
        return None
    return "and registryPassword go together: set both, or neither to use your docker login"


def _credentials_for_a_push(values: Values) -> str | None:
    if not values["registryUsername"] or values["imageRepository"]:
        return None
    return "is only used to push to imageRepository, which is not set"


def _labels_for_a_rule(values: Values) -> str | None:
    if not values["prometheusRuleLabels"] or values["prometheusRule"]:
        return None
    return "label the PrometheusRule, which is not declared: `pulumi config set prometheusRule true`"


def vpa_max_mib(values: Values) -> int:
    """The most memory VPA may give the hog: vpaMaxMb, or by default VPA_MAX_FACTOR times the limit."""
    return int(values["vpaMaxMb"] or VPA_MAX_FACTOR * values["memoryLimitMb"])


def _vpa_max_for_a_vpa(values: Values) -> str | None:
    if not values["vpaMaxMb"] or values["vpa"] != "none":
        return None
    return "is VPA's maximum, and no VPA is declared: `pulumi config set vpa InPlaceOrRecreate` (or rm vpaMaxMb)"


def _vpa_max_above_the_limit(values: Values) -> str | None:
    if not values["vpaMaxMb"] or values["vpaMaxMb"] >= values["memoryLimitMb"]:
        return None
    return (
        f"must be 0 ({VPA_MAX_FACTOR} times the limit) or at least memoryLimitMb ({values['memoryLimitMb']}): "
        "a VPA held under the hog's own limit could only shrink it"
    )


def _vpa_sizes_containers(values: Values) -> str | None:
    if values["vpa"] == "none" or values["limitScope"] == "container":
        return None
    return "needs limitScope=container: VPA recommends and applies per container, and the pod's limit would bind"


def _request_within_the_limit(values: Values) -> str | None:
    if values["memoryRequestMb"] <= values["memoryLimitMb"]:
        return None
    return (
        f"must be 0 (the limit) or at most memoryLimitMb ({values['memoryLimitMb']}): Kubernetes refuses a request "
        "above the limit"
    )


def _vpa_sizes_a_guaranteed_hog(values: Values) -> str | None:
    # verify --vpa predicts VPA's bump after a kill (oomtools/verify/vpa.py) from a request equal to the limit, and
    # VPA (controlledValues RequestsAndLimits) would scale the limit with the request, keeping their ratio.
    if values["vpa"] == "none" or values["memoryRequestMb"] in (0, values["memoryLimitMb"]):
        return None
    return (
        f"must be 0 (the limit) with vpa={values['vpa']}: VPA scales the limit with the request, and `make verify "
        "ARGS=--vpa` predicts its answer to a kill from a request equal to the limit (`pulumi config rm "
        "memoryRequestMb`, or set vpa none)"
    )


@dataclass(frozen=True)
class Rule:
    """A rule between keys, by name: the key whose value it refuses, and the check (None: the values hold)."""

    name: str
    key: str
    refuses: Callable[[Values], str | None]


RULES: Final = (
    Rule("a step leaves room for the interpreters", "memoryIncrementMb", _step_leaves_room),
    Rule("a ceiling leaves room for the interpreters", "memoryCeilingMb", _ceiling_leaves_room),
    Rule("one ceiling, in MiB or in percent", "memoryCeilingPct", _one_ceiling),
    Rule("a ceiling in percent reaches past the interpreters", "memoryCeilingPct", _percent_leaves_room),
    Rule("scope=node runs one pod per node", "replicas", _one_pod_per_node),
    Rule("the namespace is the stack's own", "namespace", _namespace_of_its_own),
    Rule("a prebuilt image or a build to push", "image", _prebuilt_or_built),
    Rule("a pushed build names its platform", "platform", _push_names_platform),
    Rule("registry credentials go together", "registryUsername", _credentials_together),
    Rule("registry credentials are for a push", "registryUsername", _credentials_for_a_push),
    Rule("labels are for a declared PrometheusRule", "prometheusRuleLabels", _labels_for_a_rule),
    Rule("VPA's maximum is for a declared VPA", "vpaMaxMb", _vpa_max_for_a_vpa),
    Rule("VPA's maximum is at least the limit", "vpaMaxMb", _vpa_max_above_the_limit),
    Rule("VPA sizes containers", "vpa", _vpa_sizes_containers),
    Rule("a request is at most the limit", "memoryRequestMb", _request_within_the_limit),
    Rule("VPA sizes a hog whose request is its limit", "memoryRequestMb", _vpa_sizes_a_guaranteed_hog),
)


def check_rules(values: Values, shown: Mapping[str, object]) -> None:
    """Raise Invalid for the first rule the values break, naming its key and the value as `shown` has it (the text
    given, for a key whose value is parsed)."""
    for rule in RULES:
        reason = rule.refuses(values)
        if reason is not None:
            raise Invalid(rule.key, shown.get(rule.key, values[rule.key]), reason)
