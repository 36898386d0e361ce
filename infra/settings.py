"""The stack's settings: one typed, immutable object from `pulumi.Config()`, validated before anything is declared.

The defaults live here and only here; Pulumi.yaml declares the same ones (a test holds the two together), because
under Pulumi's mocks, and for a key a user removes, what Pulumi.yaml says is not applied.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Final

import pulumi

from infra.monitoring import parse_labels
from workload.settings import MAX_CEILING_MIB, MEMORY_KINDS, PROCESS_MODELS

PROJECT: Final = "oom-killer"

DEFAULTS: Final[dict[str, bool | int | str]] = {
    "memoryIncrementMb": 10,
    "memoryLimitMb": 256,
    "incrementIntervalMs": 1000,
    "memoryCeilingMb": 0,
    "cpuMillicores": 100,
    "namespace": "",  # "": oom-killer-<stack>
    "createNamespace": True,  # false: deploy into a namespace an admin made (infra/rights.yaml), and leave it there
    "replicas": 1,
    "image": "",
    "imageRepository": "",
    "registryUsername": "",
    "registryPassword": "",
    "platform": "",
    "baseImage": "",
    "memoryKind": "anonymous",  # what the hog fills: anonymous, tmpfs (an emptyDir in memory), pagecache (on disk)
    "processModel": "single",  # single: PID 1 is the hog; supervised: PID 1 runs it as a worker and restarts it
    "prometheusRule": False,  # declare the alerts as a PrometheusRule (needs the Prometheus Operator's CRD)
    "prometheusRuleLabels": "",  # key=value,... for the Operator's ruleSelector, e.g. release=kube-prometheus-stack
    "scope": "deployment",  # deployment: `replicas` pods anywhere; node: a DaemonSet, one pod per selected node
    "nodeSelector": "",  # key=value,... the nodes must carry (the pod template's nodeSelector)
    "tolerations": "",  # kubectl taint's syntax, comma-separated: key=value:Effect, key:Effect, key=value, key
}

MAX_MIB: Final = MAX_CEILING_MIB  # 1 TiB, the workload's own bound: past this a value is a typo, not a test
# What the hog's cgroup is charged before its first step: the interpreter, its libraries and the workload's
# modules. It depends on the node. Measured on Docker (cgroup v1): 5 MiB charged where the interpreter's files were
# already in the page cache (charged to whoever read them first), of an 11.4 MiB RSS; where this container reads
# them first, its whole RSS and the read-ahead around it. Rounded outwards to a range.
BASELINE_MIN_MIB: Final = 3
BASELINE_MAX_MIB: Final = 16
# Docker refuses a smaller memory limit ("Minimum memory limit allowed is 6MB"), and runc under a kubelet too.
RUNTIME_MIN_LIMIT_MIB: Final = 6
MIN_LIMIT_MIB: Final = max(RUNTIME_MIN_LIMIT_MIB, BASELINE_MAX_MIB + 1)  # room for the baseline and a 1 MiB step
MAX_INTERVAL_MS: Final = 24 * 60 * 60 * 1000
MAX_REPLICAS: Final = 100
MAX_CPU_MILLICORES: Final = 64_000
SCOPES: Final = ("deployment", "node")  # a Deployment of `replicas` pods, or a DaemonSet of one pod per node
TAINT_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# RFC 1123 label, as Kubernetes requires of a namespace name.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# os/arch[/variant], as docker build --platform takes it.
_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")


def default_namespace(stack: str) -> str:
    """The namespace a stack gets when it names none: `oom-killer-<stack>`, so two stacks on one cluster do not
    collide (the dev stack names `oom-killer` in Pulumi.dev.yaml). The stack name made a DNS label, as far as it goes.
    """
    label = re.sub(r"[^a-z0-9-]+", "-", f"{PROJECT}-{stack}".lower())
    return label[:63].strip("-")


def project_keys_in_config() -> set[str]:
    """Every key in the project's namespace that the stack's config sets, as the engine passed the config in."""
    keys = set(pulumi.runtime.config.CONFIG.get()) | set(pulumi.runtime.get_config_env())
    return {key.removeprefix(f"{PROJECT}:") for key in keys if key.startswith(f"{PROJECT}:")}


def nearest_setting(key: str) -> str | None:
    """The declared setting a mistyped key most likely meant (`memoryIncremntMb`: memoryIncrementMb), or None."""
    by_lower = {name.lower(): name for name in DEFAULTS}
    found = difflib.get_close_matches(key.lower(), by_lower, n=1)
    return by_lower[found[0]] if found else None


class ConfigError(pulumi.RunError):
    """A config value the program refuses; Pulumi prints the message alone, without a stack trace."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        super().__init__(f"invalid config {PROJECT}:{key}={value!r}: {reason}")
        self.key = key
        self.value = value


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


def parse_tolerations(text: str) -> tuple[Toleration, ...]:
    """`key=value:Effect,key:Effect,key=value,key` into tolerations; ValueError says what is wrong.

    Keys and values are label keys and values: a taint's are the same syntax, so parse_labels checks them.
    """
    tolerations = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        rest, colon, effect = (part.strip() for part in item.partition(":"))
        if colon and effect not in TAINT_EFFECTS:
            raise ValueError(f"{effect!r} (for {rest}) is not an effect: {', '.join(TAINT_EFFECTS)}")
        equals = "=" in rest
        ((key, value),) = parse_labels(rest if equals else f"{rest}=").items()
        tolerations.append(Toleration(key, value if equals else None, effect))
    return tuple(tolerations)


@dataclass(frozen=True)
class StackSettings:
    memory_increment_mb: int
    memory_limit_mb: int
    increment_interval_ms: int
    memory_ceiling_mb: int  # 0: no ceiling
    cpu_millicores: int
    namespace: str
    replicas: int
    image: str  # a prebuilt image to run: nothing is built
    image_repository: str  # where to push the build, e.g. ghcr.io/acme/oom-killer; "" keeps it local
    registry_username: str
    registry_password: pulumi.Output[str] | None  # a secret
    platform: str  # "" for the Docker engine's own (a local build only)
    base_image: str  # BASE_IMAGE for the build; "" keeps the Dockerfile's default
    prometheus_rule: bool = False  # declare alerts/oom-killer.rules.yaml as a PrometheusRule
    prometheus_rule_labels: tuple[tuple[str, str], ...] = ()  # the PrometheusRule's extra labels, in order given
    memory_kind: str = "anonymous"  # one of MEMORY_KINDS
    process_model: str = "single"  # one of PROCESS_MODELS
    scope: str = "deployment"  # one of SCOPES
    node_selector: tuple[tuple[str, str], ...] = ()  # the labels a node must carry, in order given
    tolerations: tuple[Toleration, ...] = ()
    create_namespace: bool = True  # false: the namespace is an admin's; the stack neither creates nor deletes it

    @property
    def memory_limit(self) -> str:
        """The limit as a Kubernetes quantity (MB in this project means MiB)."""
        return f"{self.memory_limit_mb}Mi"

    @property
    def registry_server(self) -> str:
        """The registry host of image_repository (Docker Hub where the first part is not a host)."""
        first, _, rest = self.image_repository.partition("/")
        is_host = rest and ("." in first or ":" in first or first == "localhost")
        return first if is_host else "docker.io"


def _integer(config: pulumi.Config, key: str) -> int:
    try:
        value = config.get_int(key)
    except pulumi.ConfigTypeError as error:
        raise ConfigError(key, pulumi.runtime.get_config(f"{PROJECT}:{key}"), "must be a whole number") from error
    return int(DEFAULTS[key]) if value is None else value


def _boolean(config: pulumi.Config, key: str) -> bool:
    try:
        value = config.get_bool(key)
    except pulumi.ConfigTypeError as error:
        raise ConfigError(key, pulumi.runtime.get_config(f"{PROJECT}:{key}"), "must be true or false") from error
    return bool(DEFAULTS[key]) if value is None else value


def _rule_labels(config: pulumi.Config) -> tuple[tuple[str, str], ...]:
    text = _text(config, "prometheusRuleLabels")
    try:
        labels = parse_labels(text)
    except ValueError as error:
        raise ConfigError(
            "prometheusRuleLabels", text, f"must be key=value,... (Kubernetes labels): {error}"
        ) from error
    _check(
        not labels or _boolean(config, "prometheusRule"),
        "prometheusRuleLabels",
        text,
        "label the PrometheusRule, which is not declared: `pulumi config set prometheusRule true`",
    )
    return tuple(labels.items())


def _node_selector(config: pulumi.Config) -> tuple[tuple[str, str], ...]:
    text = _text(config, "nodeSelector")
    try:
        return tuple(parse_labels(text).items())
    except ValueError as error:
        raise ConfigError("nodeSelector", text, f"must be key=value,... (labels the nodes carry): {error}") from error


def _tolerations(config: pulumi.Config) -> tuple[Toleration, ...]:
    text = _text(config, "tolerations")
    try:
        return parse_tolerations(text)
    except ValueError as error:
        raise ConfigError(
            "tolerations", text, f"must be key=value:Effect, key:Effect, key=value or key, comma-separated: {error}"
        ) from error


def _text(config: pulumi.Config, key: str) -> str:
    value = config.get(key)
    return str(DEFAULTS[key]) if value is None else value.strip()


def _check(condition: bool, key: str, value: object, reason: str) -> None:
    if not condition:
        raise ConfigError(key, value, reason)


def load_settings(config: pulumi.Config | None = None) -> StackSettings:
    """Read and validate the stack's config; raise ConfigError on the first bad value."""
    config = config or pulumi.Config(PROJECT)
    # Pulumi itself passes an undeclared key through to the program: a typo would silently change nothing.
    unknown = sorted(project_keys_in_config() - set(DEFAULTS))
    if unknown:
        full_key, near = f"{PROJECT}:{unknown[0]}", nearest_setting(unknown[0])
        guess = f"did you mean {near}?" if near else "a typo?"
        secret = pulumi.runtime.is_config_secret(full_key) or full_key in pulumi.runtime.get_config_secret_keys_env()
        raise ConfigError(
            unknown[0],
            "[secret]" if secret else pulumi.runtime.get_config(full_key),
            f"is not a setting of this project (Pulumi.yaml declares them all): {guess} "
            f"`pulumi config rm {unknown[0]}` removes it",
        )
    increment, limit = _integer(config, "memoryIncrementMb"), _integer(config, "memoryLimitMb")
    interval, ceiling = _integer(config, "incrementIntervalMs"), _integer(config, "memoryCeilingMb")
    cpu, replicas = _integer(config, "cpuMillicores"), _integer(config, "replicas")
    namespace = _text(config, "namespace") or default_namespace(pulumi.get_stack())
    create_namespace = _boolean(config, "createNamespace")
    platform = _text(config, "platform")
    image, repository = _text(config, "image"), _text(config, "imageRepository")
    username, base_image = _text(config, "registryUsername"), _text(config, "baseImage")

    _check(0 < increment <= MAX_MIB, "memoryIncrementMb", increment, f"must be from 1 to {MAX_MIB} (MiB)")
    _check(
        MIN_LIMIT_MIB <= limit <= MAX_MIB,
        "memoryLimitMb",
        limit,
        f"must be from {MIN_LIMIT_MIB} to {MAX_MIB} (MiB): the interpreter alone takes up to {BASELINE_MAX_MIB} MiB "
        f"(and container runtimes refuse less than {RUNTIME_MIN_LIMIT_MIB})",
    )
    _check(
        increment <= limit - BASELINE_MAX_MIB,
        "memoryIncrementMb",
        increment,
        f"must be at most {limit - BASELINE_MAX_MIB}: memoryLimitMb ({limit}) less up to {BASELINE_MAX_MIB} MiB "
        "the interpreter takes, or the container is killed before its first step",
    )
    _check(0 <= interval <= MAX_INTERVAL_MS, "incrementIntervalMs", interval, f"must be from 0 to {MAX_INTERVAL_MS}")
    kind, model = _text(config, "memoryKind"), _text(config, "processModel")
    _check(kind in MEMORY_KINDS, "memoryKind", kind, f"must be one of {', '.join(MEMORY_KINDS)}")
    _check(model in PROCESS_MODELS, "processModel", model, f"must be one of {', '.join(PROCESS_MODELS)}")
    _check(
        kind != "pagecache" or 0 <= ceiling <= MAX_MIB,
        "memoryCeilingMb",
        ceiling,
        f"must be from 0 (hold at twice memoryLimitMb) to {MAX_MIB} (MiB) for memoryKind=pagecache",
    )
    supervised_room = limit - 2 * BASELINE_MAX_MIB  # two interpreters: the supervisor and its worker
    _check(
        model != "supervised" or 0 < increment <= supervised_room,
        "memoryIncrementMb",
        increment,
        f"must be at most {supervised_room} for processModel=supervised: memoryLimitMb ({limit}) less up to "
        f"{BASELINE_MAX_MIB} MiB for each of two interpreters, or the worker is killed before its first step",
    )
    _check(
        model != "supervised" or kind == "pagecache" or ceiling <= supervised_room,
        "memoryCeilingMb",
        ceiling,
        f"must be 0 (no ceiling) or at most {supervised_room} for processModel=supervised: memoryLimitMb ({limit}) "
        f"less up to {BASELINE_MAX_MIB} MiB for each of two interpreters, so that it surely holds there",
    )
    _check(
        kind == "pagecache" or 0 <= ceiling <= limit - BASELINE_MAX_MIB,
        "memoryCeilingMb",
        ceiling,
        f"must be 0 (no ceiling) or at most {limit - BASELINE_MAX_MIB}: memoryLimitMb ({limit}) less up to "
        f"{BASELINE_MAX_MIB} MiB the interpreter takes, so that it surely holds there (for a kill, set 0)",
    )
    _check(0 < cpu <= MAX_CPU_MILLICORES, "cpuMillicores", cpu, f"must be from 1 to {MAX_CPU_MILLICORES}")
    scope = _text(config, "scope")
    _check(scope in SCOPES, "scope", scope, f"must be one of {', '.join(SCOPES)}")
    _check(
        scope != "node" or replicas in (0, 1),
        "replicas",
        replicas,
        "must be 1 (or 0 to stop the pods) for scope=node: scope=node runs one pod per selected node",
    )
    _check(0 <= replicas <= MAX_REPLICAS, "replicas", replicas, f"must be from 0 to {MAX_REPLICAS}")
    _check(
        len(namespace) <= 63 and _DNS_LABEL.fullmatch(namespace) is not None,
        "namespace",
        namespace,
        "must be a DNS label: at most 63 lowercase letters, digits and '-', starting and ending alphanumeric",
    )
    _check(
        # The stack creates its namespace and deletes it on destroy: never the cluster's own. Nor, where an admin made
        # it (createNamespace=false), a shared one: the LimitRange and the deny-all NetworkPolicy hold every pod in it.
        namespace != "default" and not namespace.startswith("kube-"),
        "namespace",
        namespace,
        "must be a namespace of its own: the stack creates it and `pulumi destroy` deletes it with all it holds"
        if create_namespace
        else "must be a namespace of its own: its LimitRange and deny-all NetworkPolicy hold every pod in it",
    )
    _check(
        platform == "" or _PLATFORM.fullmatch(platform) is not None,
        "platform",
        platform,
        "must be os/arch, e.g. linux/amd64, or empty (a local build: the Docker engine's own)",
    )
    _check(
        not (image and repository),
        "image",
        image,
        "is a prebuilt image, so nothing is built to push to imageRepository: set only one of the two",
    )
    for key, value in (("image", image), ("imageRepository", repository), ("baseImage", base_image)):
        _check(re.search(r"\s", value) is None, key, value, "an image reference has no white space")
    _check(
        ":" not in repository.rpartition("/")[2] and "@" not in repository,
        "imageRepository",
        repository,
        "is a repository without a tag or digest (the program tags each build itself)",
    )
    _check(
        platform != "" or not repository,
        "platform",
        platform,
        "must name your nodes' os/arch for a pushed image, e.g. `pulumi config set platform linux/amd64` "
        "(kubectl get nodes -o jsonpath='{.items[*].status.nodeInfo.architecture}')",
    )

    password_key = f"{PROJECT}:registryPassword"
    password_set = bool(config.get("registryPassword"))
    _check(
        not password_set or pulumi.runtime.is_config_secret(password_key),
        "registryPassword",
        "[plaintext]",
        "must be stored encrypted: pulumi config set --secret registryPassword <password>",
    )
    _check(
        bool(username) == password_set,
        "registryUsername",
        username,
        "and registryPassword go together: set both, or neither to use your docker login",
    )
    _check(
        not username or bool(repository),
        "registryUsername",
        username,
        "is only used to push to imageRepository, which is not set",
    )

    return StackSettings(
        memory_increment_mb=increment,
        memory_limit_mb=limit,
        increment_interval_ms=interval,
        memory_ceiling_mb=ceiling,
        cpu_millicores=cpu,
        namespace=namespace,
        replicas=replicas,
        image=image,
        image_repository=repository,
        registry_username=username,
        registry_password=config.get_secret("registryPassword") if password_set else None,
        platform=platform,
        base_image=base_image,
        prometheus_rule=_boolean(config, "prometheusRule"),
        prometheus_rule_labels=_rule_labels(config),
        memory_kind=kind,
        process_model=model,
        scope=scope,
        node_selector=_node_selector(config),
        tolerations=_tolerations(config),
        create_namespace=create_namespace,
    )
