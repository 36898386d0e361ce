"""`oom-killer doctor`: before a first run, what is ready and what is not, one line each, with what to do.

For `make demo`: the Docker engine answers, the stack's settings are valid, the base image (or a prebuilt image) is
on the engine or can be pulled, and the memory limit fits the engine's memory. For `make up` and `make verify`: the
Pulumi CLI, the kube context and its API server, and, in the stack's namespace, each right that infra/rights.yaml
grants the deployers and verifiers (asked of the API server as SelfSubjectAccessReviews: nothing is changed).

    oom-killer doctor [--stack dev] [--set KEY=VALUE ...] [--context NAME] [--kubeconfig FILE]

Each line is `doctor: ok|FAIL|skip  <what>: <why>`; a check that cannot apply here (no kubeconfig at all, the
Kubernetes client not installed) is a skip, not a failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from oomtools.arguments import PROJECT_DIR, Parser, UsageError, add_stack_arguments, exit_codes, stack_overrides
from oomtools.errors import one_line, root_cause
from oomtools.kube_context import ContextProblem, chosen_context, kubeconfig_paths

EXIT_READY: Final = 0
EXIT_NOT_READY: Final = 1
EXIT_BAD_ARGUMENTS: Final = 2
EXIT_INTERRUPTED: Final = 130
CODE_MEANINGS: Final = {
    EXIT_READY: "every check passed (or could not apply here and was skipped)",
    EXIT_NOT_READY: "a check failed: its line says what to do",
    EXIT_BAD_ARGUMENTS: "a bad argument or stack config value (one line says which)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
RIGHTS_FILE: Final = PROJECT_DIR / "infra" / "rights.yaml"
# The roles of infra/rights.yaml a user of the stack needs, bound in its namespace.
NAMESPACED_ROLES: Final = ("oom-killer-deployer", "oom-killer-verifier")


@dataclass(frozen=True)
class Check:
    status: str  # ok, FAIL, skip
    what: str
    why: str

    def line(self) -> str:
        return f"doctor: {self.status:<5} {self.what}: {self.why}"


@dataclass(frozen=True)
class Right:
    verb: str
    resource: str  # "pods", "pods/log"
    group: str
    name: str | None  # a resourceName the role limits it to
    role: str

    def __str__(self) -> str:
        kind = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {kind}" + (f" {self.name}" if self.name else "")


def needed_rights(rights_file: Path = RIGHTS_FILE, roles: tuple[str, ...] = NAMESPACED_ROLES) -> list[Right]:
    """Each verb on each resource that the named ClusterRoles of infra/rights.yaml grant (bound in the namespace)."""
    import yaml

    found = []
    for document in yaml.safe_load_all(rights_file.read_text()):
        if not document or document.get("kind") != "ClusterRole" or document["metadata"]["name"] not in roles:
            continue
        for rule in document.get("rules", []):
            names = rule.get("resourceNames") or [None]
            for group in rule.get("apiGroups", [""]):
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        found += [Right(verb, resource, group, name, document["metadata"]["name"]) for name in names]
    return found


def docker_checks(stack: str, overrides: dict[str, str]) -> Iterator[Check]:
    import docker.errors

    from infra.settings import ConfigError
    from oomtools import demo
    from oomtools.rehearsal import (
        BASE_IMAGE_ADVICE,
        dockerfile_base_image,
        fits_engine,
        memory_bytes,
        stack_pod,
    )

    try:
        pod = stack_pod(stack, overrides)
    except ConfigError as error:
        yield Check("FAIL", f"the {stack} stack's settings (make demo, make up)", " ".join(str(error).split()))
        return
    limits = pod.limits
    yield Check("ok", f"the {stack} stack's settings (make demo, make up)", f"valid: memory limit {limits['memory']}")
    try:
        client = demo.engine()
    except demo.DemoError as error:
        yield Check("FAIL", "Docker engine (make demo)", f"{error}; start Docker, or set DOCKER_HOST")
        return
    info = client.info()
    total = int(info.get("MemTotal") or 0)
    yield Check(
        "ok",
        "Docker engine (make demo)",
        f"answers at {demo.engine_address()[0]} (version {info.get('ServerVersion', '?')}, "
        f"{info.get('Driver', '?')} storage, cgroup v{info.get('CgroupVersion', '?')}, {total / (1 << 30):.1f} GiB)",
    )
    if pod.build is None:
        image, advice = str(pod.container["image"]), "set image to one the engine has or can pull"
    else:
        args = pod.build["build"].get("args") or {}
        image = args.get("BASE_IMAGE") or dockerfile_base_image(Path(pod.build["build"]["dockerfile"]))
        advice = BASE_IMAGE_ADVICE
    what = f"{'image' if pod.build is None else 'base image'} {image} (make demo)"
    try:
        client.images.get(image)
        yield Check("ok", what, "on the engine")
    except docker.errors.ImageNotFound:
        try:
            client.images.get_registry_data(image)
            yield Check("ok", what, "not on the engine; its registry answers, so make demo will pull it")
        except docker.errors.DockerException as error:
            yield Check("FAIL", what, f"neither on the engine nor to be pulled ({one_line(error)}); {advice}")
    limit = memory_bytes(limits["memory"])
    too_large = fits_engine(limit, total)
    what = f"memory limit {limits['memory']} on this engine (make demo)"
    if too_large:
        yield Check("FAIL", what, too_large)
    else:
        yield Check("ok", what, f"below the engine's {total / (1 << 30):.1f} GiB")


def cluster_checks(
    stack: str, overrides: dict[str, str], context: str | None, kubeconfig: str | None
) -> Iterator[Check]:
    paths = kubeconfig_paths(kubeconfig)
    has_kubeconfig = bool(kubeconfig) or any(Path(p).exists() for p in paths.split(os.pathsep))
    pulumi = shutil.which("pulumi")
    if pulumi:
        yield Check("ok", "Pulumi CLI (make up)", f"at {pulumi}")
    else:  # a failure for one who means to deploy (a kube context is set up), else not needed yet
        yield Check(
            "FAIL" if has_kubeconfig else "skip",
            "Pulumi CLI (make up)",
            "not on PATH: https://www.pulumi.com/docs/install/ (make demo does not need it)",
        )
    what = "kube context (make up, make verify)"
    try:
        import kubernetes  # noqa: F401  # installed with the tools; a virtualenv made otherwise may lack it
    except ImportError:
        yield Check("skip", what, "the Kubernetes client is not installed here (make verify installs it)")
        return
    from kubernetes import client as kube
    from kubernetes import config

    if not has_kubeconfig:
        yield Check("skip", what, f"no kubeconfig ({paths}): make up and make verify need one, make demo does not")
        return
    try:
        chosen = chosen_context(kubeconfig, context)
    except ContextProblem as problem:
        yield Check("FAIL", what, str(problem))
        return
    api: Any = config.new_client_from_config(config_file=kubeconfig, context=chosen)  # type: ignore[no-untyped-call]
    try:
        version = kube.VersionApi(api).get_code(_request_timeout=5)
    except Exception as error:  # urllib3's many ways to fail: one line
        host = api.configuration.host
        yield Check("FAIL", what, f"{chosen}: the API server at {host} does not answer: {root_cause(error)}")
        return
    yield Check("ok", what, f"{chosen}: the API server at {api.configuration.host} answers ({version.git_version})")
    from oomtools.render import render, stack_config

    namespace = str(render({**stack_config(stack), **overrides}, stack_name=stack).exports["namespace"])
    authorization = kube.AuthorizationV1Api(api)
    refused = []
    for right in needed_rights():
        review = kube.V1SelfSubjectAccessReview(
            spec=kube.V1SelfSubjectAccessReviewSpec(
                resource_attributes=kube.V1ResourceAttributes(
                    namespace=namespace,
                    verb=right.verb,
                    group=right.group,
                    resource=right.resource.split("/")[0],
                    subresource=right.resource.split("/")[1] if "/" in right.resource else None,
                    name=right.name,
                )
            )
        )
        answer = authorization.create_self_subject_access_review(review, _request_timeout=5)
        if answer.status is None or not answer.status.allowed:
            refused.append(right)
    what = f"rights in namespace {namespace} (make up, make verify)"
    if refused:
        roles = sorted({right.role for right in refused})
        yield Check(
            "FAIL",
            what,
            f"{len(refused)} of {len(needed_rights())} refused ({', '.join(map(str, refused[:3]))}"
            f"{', ...' if len(refused) > 3 else ''}): an admin applies infra/rights.yaml and binds you to "
            f"{' and '.join(roles)} (docs/rights.md)",
        )
    else:
        yield Check("ok", what, f"all {len(needed_rights())} that infra/rights.yaml grants are yours")


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = __doc__
    parser.epilog = exit_codes(CODE_MEANINGS)
    add_stack_arguments(parser)
    parser.add_argument("--context", help="the kube context to check (default: the kubeconfig's current one)")
    parser.add_argument("--kubeconfig", help="the kubeconfig to read (default: KUBECONFIG, or ~/.kube/config)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = configure(Parser(prog="oom-killer doctor")).parse_args(argv)
        overrides = stack_overrides(args.stack, args.overrides)
    except UsageError as error:
        print(f"doctor: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    failed = False
    every = (
        docker_checks(args.stack, overrides),
        cluster_checks(args.stack, overrides, args.context, args.kubeconfig),
    )
    try:
        for checks in every:
            for check in checks:
                print(check.line(), flush=True)
                failed = failed or check.status == "FAIL"
    except KeyboardInterrupt:
        print("doctor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_NOT_READY if failed else EXIT_READY
