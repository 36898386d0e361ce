"""The workload's image: built from the Dockerfile (pushed, or kept local), or a prebuilt one."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra.settings import StackSettings

PROJECT_DIR = Path(__file__).resolve().parent.parent
LOCAL_REPOSITORY = "oom-killer"
# The Secret the pod pulls a pushed image with, when the stack has registry credentials.
REGISTRY_LOGIN_NAME = "oom-killer-registry"


@dataclass(frozen=True)
class WorkloadImage:
    reference: pulumi.Output[str]  # what the pod template runs
    pull_policy: str
    build: docker.Image | None = None  # the build (and push), where there is one


def context_tag(settings: StackSettings, project_dir: Path = PROJECT_DIR) -> str:
    """A tag that changes exactly when the image would: the build context's files and the build's arguments.

    Known before the build (so a preview shows it), unique per content (so a rebuilt local image rolls out
    under a new tag), and the same for the same content (so nothing rolls out when nothing changed).
    """
    digest = hashlib.sha256()
    files = [project_dir / "Dockerfile", project_dir / ".dockerignore"]
    files += sorted(p for p in (project_dir / "workload").rglob("*.py") if "__pycache__" not in p.parts)
    for path in files:
        digest.update(path.relative_to(project_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(f"platform={settings.platform}\0base={settings.base_image}".encode())
    return digest.hexdigest()[:16]


def workload_image(settings: StackSettings) -> WorkloadImage:
    """Declare the build (when there is one) and say what the pod should run.

    A pushed image is run by its digest, so every push rolls out and nodes pull exactly what was built. A local
    image has no digest a node can pull: it is run by its content tag with IfNotPresent, for a cluster that
    shares the Docker engine (Docker Desktop, minikube's docker-env) or was given the image (kind load).
    """
    if settings.image:
        return WorkloadImage(pulumi.Output.from_input(settings.image), "IfNotPresent")

    tag = context_tag(settings)
    build = docker.DockerBuildArgs(
        context=str(PROJECT_DIR),
        dockerfile=str(PROJECT_DIR / "Dockerfile"),
        # Unset for a local build: the engine builds for its own platform, which is its cluster's (kind, minikube
        # and Docker Desktop run their nodes on it); a pushed build always names one (the settings require it).
        platform=settings.platform or None,
        args={"BASE_IMAGE": settings.base_image} if settings.base_image else None,
        # The Dockerfile's one RUN (compileall) needs no network: none, so the build is the same on an engine with
        # no default bridge (dockerd --bridge=none, as in CI) and can fetch nothing behind your back.
        network="none",
    )
    if not settings.image_repository:
        local = docker.Image("workload-image", image_name=f"{LOCAL_REPOSITORY}:{tag}", build=build, skip_push=True)
        return WorkloadImage(local.image_name, "IfNotPresent", local)

    # Without a username and password the provider pushes with the credentials `docker login` stored for the
    # server (pulumi-docker reads the Docker config file), but it needs the server named to look them up.
    registry = docker.RegistryArgs(
        server=settings.registry_server,
        username=settings.registry_username or None,
        password=settings.registry_password,  # None unless set (as a secret)
    )
    pushed = docker.Image(
        "workload-image", image_name=f"{settings.image_repository}:{tag}", build=build, registry=registry
    )
    return WorkloadImage(pushed.repo_digest, "IfNotPresent", pushed)


def pull_credentials(settings: StackSettings) -> pulumi.Output[str] | None:
    """The `.dockerconfigjson` the nodes pull the pushed image with: the stack's registry credentials, a secret.

    None without credentials in the config (a `docker login` pushes, and the nodes pull as they are set up to).
    """
    password = settings.registry_password
    if password is None:
        return None
    server, username = settings.registry_server, settings.registry_username

    def config(password: str) -> str:
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        return json.dumps({"auths": {server: {"username": username, "password": password, "auth": auth}}})

    return pulumi.Output.secret(password.apply(config))
