"""The stack's settings: one typed, immutable object from `pulumi.Config()`, validated before anything is declared.

Every key is read through infra/table.py, the one table of keys, defaults, bounds and rules (Pulumi.yaml and the
docs' table are generated from it), because under Pulumi's mocks, and for a key a user removes, what Pulumi.yaml
says is not applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pulumi

from infra.names import PROJECT
from infra.table import (
    ROWS,
    SETTINGS,
    VPA_MAX_FACTOR,
    Invalid,
    Toleration,
    check_rules,
    config_refusal,
    default_namespace,
    nearest_setting,
)

# The defaults, by key (the table's): what a stack that sets nothing runs with.
DEFAULTS: Final[dict[str, bool | int | str]] = {row.key: row.default for row in ROWS}


def project_keys_in_config() -> set[str]:
    """Every key in the project's namespace that the stack's config sets, as the engine passes the config to a
    program: in PULUMI_CONFIG (oomtools/render.py passes it so too)."""
    keys = set(pulumi.runtime.get_config_env())
    return {key.removeprefix(f"{PROJECT}:") for key in keys if key.startswith(f"{PROJECT}:")}


def is_secret(key: str) -> bool:
    """Whether the stack's config holds this key encrypted."""
    full_key = f"{PROJECT}:{key}"
    return pulumi.runtime.is_config_secret(full_key) or full_key in pulumi.runtime.get_config_secret_keys_env()


class ConfigError(pulumi.RunError):
    """A config value the program refuses; Pulumi prints the message alone, without a stack trace."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        super().__init__(config_refusal(key, value, reason))
        self.key = key
        self.value = value


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
    memory_kind: str = "anonymous"  # a name of workload/kinds.py's MEMORY_KINDS
    process_model: str = "single"  # a name of workload/kinds.py's PROCESS_MODELS
    scope: str = "deployment"  # one of infra/table.py's SCOPES
    node_selector: tuple[tuple[str, str], ...] = ()  # the labels a node must carry, in order given
    tolerations: tuple[Toleration, ...] = ()
    create_namespace: bool = True  # false: the namespace is an admin's; the stack neither creates nor deletes it
    memory_ceiling_pct: int = 0  # 0: none; else the percent of the limit the container's charge holds at
    limit_scope: str = "container"  # one of infra/table.py's LIMIT_SCOPES
    vpa: str = "none"  # one of infra/table.py's VPA_MODES: a VerticalPodAutoscaler's updateMode, or none
    vpa_max_mb: int = 0  # 0: VPA_MAX_FACTOR times the limit
    memory_request_mb: int = 0  # 0: equal to the limit (Guaranteed); below it the pod is Burstable

    @property
    def memory_request(self) -> str:
        """The memory request as a Kubernetes quantity: memoryRequestMb, or the limit (Guaranteed QoS)."""
        return f"{self.memory_request_mb or self.memory_limit_mb}Mi"

    @property
    def burstable(self) -> bool:
        """Whether the memory request is below the limit: the pod's QoS class is Burstable, not Guaranteed."""
        return 0 < self.memory_request_mb < self.memory_limit_mb

    @property
    def vpa_max(self) -> str | None:
        """The most memory VPA may give the hog, as a quantity (also the LimitRange's max); None without a VPA."""
        if self.vpa == "none":
            return None
        return f"{self.vpa_max_mb or VPA_MAX_FACTOR * self.memory_limit_mb}Mi"

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


def load_settings(config: pulumi.Config | None = None) -> StackSettings:
    """Read and validate the stack's config; raise ConfigError on the first bad value: an unknown key, then each
    key by its row of the table, then the table's rules between keys."""
    config = config or pulumi.Config(PROJECT)
    # Pulumi itself passes an undeclared key through to the program: a typo would silently change nothing.
    unknown = sorted(project_keys_in_config() - set(SETTINGS))
    if unknown:
        near = nearest_setting(unknown[0])
        guess = f"did you mean {near}?" if near else "a typo?"
        raise ConfigError(
            unknown[0],
            "[secret]" if is_secret(unknown[0]) else pulumi.runtime.get_config(f"{PROJECT}:{unknown[0]}"),
            f"is not a setting of this project (Pulumi.yaml declares them all): {guess} "
            f"`pulumi config rm {unknown[0]}` removes it",
        )
    values: dict[str, object] = {}
    shown: dict[str, object] = {}  # the text given, for a key whose value is parsed into something else
    try:
        for row in ROWS:
            raw = config.get(row.key)
            if row.secret and raw and not is_secret(row.key):
                reason = f"must be stored encrypted: pulumi config set --secret {row.key} <password>"
                raise Invalid(row.key, "[plaintext]", reason)
            values[row.key] = row.parse(raw)
            if row.parser is not None:
                shown[row.key] = row.default_text if raw is None else raw.strip()
        values["namespace"] = values["namespace"] or default_namespace(pulumi.get_stack())
        check_rules(values, shown)
    except Invalid as error:
        raise ConfigError(error.key, error.value, error.reason) from error
    fields = {row.field: values[row.key] for row in ROWS if not row.secret}
    secrets = {row.field: config.get_secret(row.key) if values[row.key] else None for row in ROWS if row.secret}
    return StackSettings(**fields, **secrets)  # type: ignore[arg-type]  # each row's parser gives its field's type
