"""The kube context a command is about to use, checked before it calls anything: the user's own mistakes (a
kubeconfig that is not there or cannot be read, a --context it does not have) told apart from a cluster that does
not answer. `doctor` reports them as a failed check, `verify` as bad arguments (exit 2, where an unreachable
cluster is 3)."""

from __future__ import annotations

import os
from pathlib import Path


def kubeconfig_paths(kubeconfig: str | None) -> str:
    """Where the Kubernetes client looks: --kubeconfig, else KUBECONFIG (a list), else ~/.kube/config."""
    return kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


class ContextProblem(Exception):
    """The kubeconfig or the context asked for cannot be used: one line says why."""


def chosen_context(kubeconfig: str | None, context: str | None) -> str:
    """The context the client will connect with: --context, else the kubeconfig's current one. ContextProblem where
    the client could not build a connection from them (whether the API server answers is another question)."""
    from kubernetes import config

    if kubeconfig and not Path(kubeconfig).is_file():
        raise ContextProblem(f"--kubeconfig {kubeconfig}: there is no such file")
    paths = kubeconfig_paths(kubeconfig)
    if not any(Path(path).is_file() for path in paths.split(os.pathsep) if path):
        raise ContextProblem(f"no kubeconfig at {paths}: give --kubeconfig FILE or set KUBECONFIG")
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except config.ConfigException as error:
        raise ContextProblem(f"the kubeconfig ({paths}) cannot be read: {' '.join(str(error).split())}") from error
    names = [entry["name"] for entry in contexts]
    chosen = context or (current or {}).get("name")
    if not chosen:
        raise ContextProblem(f"the kubeconfig ({paths}) has no current context: give --context ({', '.join(names)})")
    if chosen not in names:
        raise ContextProblem(
            f"--context {chosen}: not in the kubeconfig ({paths}; its contexts: {', '.join(names) or 'none'})"
        )
    return str(chosen)
