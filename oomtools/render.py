"""Run __main__.py under Pulumi's own mocks and return what it declared, as the engine would have received it.

No CLI, engine or provider is involved: `pulumi.runtime.set_mocks` stands in for the engine, records each
resource's inputs (camelCase, as sent over the wire), and answers with those inputs as outputs (plus a digest for
a pushed image). The tests and `make demo` read the declared objects from here, so both see exactly what
`pulumi up` would send.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks, settings, stack
from pulumi.runtime.sync_await import _sync_await

from infra.names import PROJECT

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROGRAM = PROJECT_DIR / "__main__.py"


# The program's own order of the Kubernetes objects (as __main__.py declares them, and so each after what it needs):
# the order the objects are returned in, whatever order the engine (here its mock) took the registrations in. A stack
# declares a Deployment or (scope=node) a DaemonSet, never both.
# The keys a manifest begins with, as manifests are written.
MANIFEST_HEAD = ("apiVersion", "kind", "metadata")
KIND_ORDER = ("Namespace", "LimitRange", "NetworkPolicy", "Deployment", "DaemonSet", "PrometheusRule")


@dataclass
class Declared:
    type: str
    name: str
    inputs: dict[str, Any]


def _program_order(resource: Declared) -> tuple[int, str, str, str]:
    """The sort key of a Kubernetes object: its kind's place in KIND_ORDER (others after), then namespace, name."""
    kind = str(resource.inputs.get("kind", ""))
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    metadata = resource.inputs.get("metadata") or {}
    return rank, kind, str(metadata.get("namespace", "")), str(metadata.get("name", ""))


@dataclass
class Rendered:
    # In the order the mock engine received the registrations: Pulumi does not promise one, so nothing may rely on
    # it (look resources up with of_type/one, or take kubernetes_resources() in the program's order).
    resources: list[Declared] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)
    # resource name -> the names of the resources the engine must create first (explicit and through outputs)
    dependencies: dict[str, list[str]] = field(default_factory=dict)

    def of_type(self, resource_type: str) -> list[Declared]:
        return [resource for resource in self.resources if resource.type == resource_type]

    def one(self, resource_type: str) -> Declared:
        (found,) = self.of_type(resource_type)
        return found

    def kubernetes_resources(self) -> list[Declared]:
        """The Kubernetes resources in the program's order (KIND_ORDER, then namespace and name), however recorded."""
        return sorted((r for r in self.resources if r.type.startswith("kubernetes:")), key=_program_order)

    def kubernetes_objects(self) -> list[dict[str, Any]]:
        """The Kubernetes objects as manifests, in the program's order: each begins with apiVersion, kind and metadata,
        as manifests are written, and the rest of its keys (at every depth) are sorted, so the same input gives the
        same bytes (for a diff or a policy check)."""
        return [manifest(r.inputs) for r in self.kubernetes_resources()]


def manifest(inputs: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes object's inputs as a manifest: apiVersion, kind, metadata first, then the other keys sorted."""
    first = [key for key in MANIFEST_HEAD if key in inputs]
    return {key: inputs[key] for key in [*first, *sorted(set(inputs) - set(first))]}


def _plain(value: Any) -> Any:
    """Numbers cross the engine's wire as doubles; the provider sends whole ones to Kubernetes as integers. A mapping
    crosses it as a protobuf Struct, whose keys come out in an order that changes from one process to the next (the
    string hash): they are sorted here, so that what is rendered is the same bytes for the same input."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class _Recorder(pulumi.runtime.Mocks):
    def __init__(self, rendered: Rendered) -> None:
        self.rendered = rendered

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        inputs = _plain(args.inputs)
        self.rendered.resources.append(Declared(args.typ, args.name, inputs))
        outputs = dict(inputs)
        if args.typ == "docker:index/image:Image":
            # What the provider reports after a push: the repository with the manifest's digest.
            repository = inputs["imageName"].rsplit(":", 1)[0]
            outputs["repoDigest"] = f"{repository}@sha256:{hashlib.sha256(args.name.encode()).hexdigest()}"
        return f"{args.name}-id", outputs

    def call(self, _args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


class _Monitor(mocks.MockMonitor):
    """The mock engine, also noting each registration's dependencies (the order the engine would create in)."""

    def __init__(self, rendered: Rendered) -> None:
        super().__init__(_Recorder(rendered))
        self.rendered = rendered

    def RegisterResource(self, request: Any) -> Any:
        names = [urn.rsplit("::", 1)[-1] for urn in request.dependencies]
        self.rendered.dependencies[request.name] = names
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]


def stack_file(stack_name: str) -> Path:
    return PROJECT_DIR / f"Pulumi.{stack_name}.yaml"


def stack_config(stack_name: str = "dev") -> dict[str, str]:
    """The config of a stack file (Pulumi.<stack>.yaml), keys without the project prefix.

    A stack without a file has no config of its own: Pulumi runs it on the project's defaults, and so does this.
    """
    path = stack_file(stack_name)
    if not path.exists():
        return {}
    document = yaml.safe_load(path.read_text()) or {}
    values = document.get("config") or {}
    return {key.removeprefix(f"{PROJECT}:"): str(value) for key, value in values.items()}


def _run_program() -> None:
    # The program takes over SIGINT for the engine's interrupt (infra/cancellation.py); here, Ctrl-C stays the caller's.
    previous = signal.getsignal(signal.SIGINT)
    try:
        runpy.run_path(str(PROGRAM), run_name="__main__")
    finally:
        signal.signal(signal.SIGINT, previous)


def render(config: dict[str, str], stack_name: str = "dev", secrets: frozenset[str] = frozenset()) -> Rendered:
    """Run the program once with this config (keys without the project prefix; `secrets` names the secret ones).

    Raises what the program raises (a ConfigError for a bad value); `rendered.resources` is then what had been
    declared before it, which the program keeps empty by validating first.
    """
    rendered = Rendered()
    monitor = _Monitor(rendered)
    mocks.set_mocks(monitor.mocks, project=PROJECT, stack=stack_name, preview=False, monitor=monitor)
    full = {f"{PROJECT}:{key}": value for key, value in config.items()}
    secret_keys = [f"{PROJECT}:{key}" for key in secrets]
    pulumi.runtime.set_all_config(full, secret_keys)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    # The engine hands a program its config in PULUMI_CONFIG (and the secret keys' names beside it), which is what
    # the program lists its keys from: so does this, over what the environment already holds.
    previous = {name: os.environ.get(name) for name in ("PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS")}
    os.environ["PULUMI_CONFIG"] = json.dumps({**pulumi.runtime.get_config_env(), **full})
    os.environ["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(
        sorted({*pulumi.runtime.get_config_secret_keys_env(), *secret_keys})
    )
    try:
        _sync_await(stack.run_pulumi_func(_run_program))
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        root = settings.get_root_resource()
        exports = dict(root.outputs) if isinstance(root, stack.Stack) else {}
        settings.set_root_resource(None)  # type: ignore[arg-type]
    for name, value in exports.items():
        rendered.exports[name] = _sync_await(pulumi.Output.from_input(value).future())
    return rendered
