"""The rules of alerts/oom-killer.rules.yaml as a ready PrometheusRule manifest (alerts/oom-killer.prometheusrule.yaml)
for a Prometheus Operator that Pulumi does not manage, such as kube-prometheus-stack's: generated from the rule file,
with the `release` label the chart's default ruleSelector matches; optionally scoped to chosen namespaces (the
selectors templated by oomtools/promql_scope.py) or without chosen alerts. What `make verify` asks Prometheus and
Alertmanager is oomtools/alert_client.py; the alerts themselves are named in oomtools/alert_catalogue.py.

    python -m oomtools.alerts --output alerts/oom-killer.prometheusrule.yaml   # regenerate the committed manifest
    python -m oomtools.alerts --check                                         # exit 1 if it is out of date
    python -m oomtools.alerts --labels release=prometheus --watch-namespaces 'oom-killer|team-a' > my-rules.yaml
    python -m oomtools.alerts --ignore-namespaces 'oom-killer.*' --omit-alert ContainerCrashLooping > my-rules.yaml
"""

from __future__ import annotations

import argparse
import copy
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Final, TextIO

import yaml

from infra.monitoring import PROMETHEUS_RULE_API_VERSION, PROMETHEUS_RULE_NAME, RULES_FILE, rule_groups
from infra.names import APP, parse_labels
from oomtools.promql_scope import UnscopableExpr, check_namespace_regex, scope_expr

MANIFEST_FILE: Final = RULES_FILE.with_name("oom-killer.prometheusrule.yaml")
REGENERATE: Final = "venv/bin/python -m oomtools.alerts --output alerts/oom-killer.prometheusrule.yaml"
# kube-prometheus-stack's Prometheus selects PrometheusRules labelled `release: <its Helm release>` (its values'
# ruleSelectorNilUsesHelmValues: true, the default); the chart's README installs the release as kube-prometheus-stack.
DEFAULT_RELEASE: Final = "kube-prometheus-stack"
# The app's name as the stack labels its objects, and the Operator's ruleSelector.
DEFAULT_MANIFEST_LABELS: Final = {"app.kubernetes.io/name": APP, "release": DEFAULT_RELEASE}
_NAMESPACE_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def scoped_groups(groups: list[dict[str, Any]], namespaces: str, ignore: bool = False) -> list[dict[str, Any]]:
    """The groups with every rule's expression scoped to the namespaces (see scope_expr); the rest as it is."""
    scoped = copy.deepcopy(groups)
    for group in scoped:
        for rule in group["rules"]:
            try:
                rule["expr"] = scope_expr(rule["expr"], namespaces, ignore)
            except UnscopableExpr as error:
                raise UnscopableExpr(f"{rule.get('alert') or rule.get('record')}'s expression: {error}") from None
    return scoped


def without_alerts(groups: list[dict[str, Any]], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The groups without the named alerts; ValueError names one that is not in them."""
    present = {rule.get("alert") for group in groups for rule in group["rules"]}
    unknown = sorted(set(names) - present)
    if unknown:
        raise ValueError(
            f"no alert {', '.join(unknown)} in the rules (they are {', '.join(sorted(map(str, present)))})"
        )
    kept = [{**group, "rules": [rule for rule in group["rules"] if rule.get("alert") not in names]} for group in groups]
    return copy.deepcopy([group for group in kept if group["rules"]])


def prometheus_rule(
    groups: list[dict[str, Any]], labels: dict[str, str], namespace: str | None = None
) -> dict[str, Any]:
    """The PrometheusRule object: the name and API version the stack's own (prometheusRule=true) has, the groups
    as given; no namespace unless given, so that `kubectl apply --namespace` places it."""
    metadata: dict[str, Any] = {"name": PROMETHEUS_RULE_NAME}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(labels)
    return {
        "apiVersion": PROMETHEUS_RULE_API_VERSION,
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {"groups": groups},
    }


class _Dumper(yaml.SafeDumper):
    """The rule file's own styles: a literal block for a multi-line string (the expressions), a folded one for a long
    line (the annotations); keys in the order given."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:  # noqa: ARG002
        super().increase_indent(flow, False)  # lists indented under their key, as the rule file writes them


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else ">" if len(text) > 80 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _string)


def manifest_text(rule: dict[str, Any], options: str = "") -> str:
    """The manifest as YAML, the same bytes for the same rule: a header naming the options that made it, then the
    object with its keys in a fixed order (the rule file's own order inside the groups)."""
    source = f"{RULES_FILE.parent.name}/{RULES_FILE.name}"
    where = (
        "" if "namespace" in rule["metadata"] else "--namespace <one your Prometheus' ruleNamespaceSelector selects> "
    )
    header = (
        f"# Generated from {source} by: python -m oomtools.alerts{options} --output <this file>\n"
        "# Do not edit: edit the rule file, then generate this again (the project's tests compare the two).\n"
        f"# Apply: kubectl apply {where}-f <this file>\n"
        "# Its labels must match the Prometheus object's ruleSelector (kube-prometheus-stack: release=<its release>).\n"
    )
    body = yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True, default_flow_style=False)
    return header + body


def generate(
    labels: dict[str, str] | None = None,
    namespace: str | None = None,
    watch_namespaces: str | None = None,
    ignore_namespaces: str | None = None,
    omit: tuple[str, ...] = (),
    rules_file: Path = RULES_FILE,
    runbook_url_base: str | None = None,
) -> dict[str, Any]:
    """The PrometheusRule for the rule file: the default labels updated by labels; the groups scoped and trimmed as
    asked (as they are otherwise); each runbook_url (a path in this project) made a link under runbook_url_base."""
    groups = rule_groups(rules_file)
    if omit:
        groups = without_alerts(groups, omit)
    if runbook_url_base is not None:
        groups = with_runbook_base(groups, runbook_url_base)
    if watch_namespaces is not None:
        groups = scoped_groups(groups, watch_namespaces)
    if ignore_namespaces is not None:
        groups = scoped_groups(groups, ignore_namespaces, ignore=True)
    return prometheus_rule(groups, {**DEFAULT_MANIFEST_LABELS, **(labels or {})}, namespace)


def with_runbook_base(groups: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """The groups with each alert's runbook_url, a path from the project's root (docs/runbooks/<alert>.md), under
    the base URL where the user publishes this project's docs (kubernetes-mixin's runbookURLPattern, as a prefix)."""
    linked = copy.deepcopy(groups)
    for group in linked:
        for rule in group["rules"]:
            annotations = rule.get("annotations", {})
            if "runbook_url" in annotations and "://" not in annotations["runbook_url"]:
                annotations["runbook_url"] = f"{base.rstrip('/')}/{annotations['runbook_url']}"
    return linked


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line and exit 2, as every tool here
        raise ValueError(message)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m oomtools.alerts",
        description="Write alerts/oom-killer.rules.yaml as a monitoring.coreos.com/v1 PrometheusRule manifest.",
    )
    parser.add_argument("--output", type=Path, help="write the manifest here (default: standard output)")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 unless {MANIFEST_FILE.parent.name}/{MANIFEST_FILE.name} is what the rule file gives",
    )
    parser.add_argument(
        "--labels",
        default="",
        help=f"key=value,... added to (or replacing) the manifest's labels (default: release={DEFAULT_RELEASE}); "
        "match your Prometheus object's ruleSelector",
    )
    parser.add_argument("--namespace", help="metadata.namespace (default: none; kubectl apply --namespace places it)")
    parser.add_argument(
        "--watch-namespaces",
        metavar="REGEX",
        help="add namespace=~REGEX to every series selector: the alerts fire for those namespaces only "
        "(default: every namespace)",
    )
    parser.add_argument(
        "--ignore-namespaces",
        metavar="REGEX",
        help="add namespace!~REGEX to every series selector: the alerts never fire for those namespaces",
    )
    parser.add_argument(
        "--omit-alert",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this alert out (repeatable), e.g. ContainerCrashLooping where KubePodCrashLooping pages already",
    )
    parser.add_argument(
        "--runbook-url-base",
        metavar="URL",
        help="where this project's docs are published (e.g. https://github.com/<you>/oom-killer/blob/main): each "
        "runbook_url, a path such as docs/runbooks/ContainerOOMKilled.md, becomes a link under it",
    )
    args = parser.parse_args(argv)
    shaping = (
        args.output,
        args.labels,
        args.namespace,
        args.watch_namespaces,
        args.ignore_namespaces,
        args.runbook_url_base,
    )
    if args.runbook_url_base is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", args.runbook_url_base):
        raise ValueError(f"--runbook-url-base {args.runbook_url_base!r}: not an http(s) URL")
    if args.check and (any(option is not None and option != "" for option in shaping) or args.omit_alert):
        raise ValueError("--check compares the committed manifest, made with no other option: give it alone")
    if args.namespace is not None and not (len(args.namespace) <= 63 and _NAMESPACE_NAME.fullmatch(args.namespace)):
        raise ValueError(f"--namespace {args.namespace!r}: not a Kubernetes namespace name")
    for option, regex in (
        ("--watch-namespaces", args.watch_namespaces),
        ("--ignore-namespaces", args.ignore_namespaces),
    ):
        if regex is not None:
            try:
                check_namespace_regex(regex)
            except ValueError as error:
                raise ValueError(f"{option} {error}") from None
    try:
        args.labels = parse_labels(args.labels)
    except ValueError as error:
        raise ValueError(f"--labels {args.labels!r}: {error}") from None
    return args


def _options(args: argparse.Namespace) -> str:
    """The options that shape the manifest, as one canonical command-line tail (the same whatever order or --output
    they were given in), shell-quoted."""
    options: list[str] = []
    if args.labels:
        options += ["--labels", ",".join(f"{key}={value}" for key, value in args.labels.items())]
    if args.namespace:
        options += ["--namespace", args.namespace]
    if args.watch_namespaces is not None:
        options += ["--watch-namespaces", args.watch_namespaces]
    if args.ignore_namespaces is not None:
        options += ["--ignore-namespaces", args.ignore_namespaces]
    for name in args.omit_alert:
        options += ["--omit-alert", name]
    if args.runbook_url_base is not None:
        options += ["--runbook-url-base", args.runbook_url_base]
    return "".join(f" {shlex.quote(option)}" for option in options)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parse_args(argv)
        rule = generate(
            args.labels,
            args.namespace,
            args.watch_namespaces,
            args.ignore_namespaces,
            tuple(args.omit_alert),
            runbook_url_base=args.runbook_url_base,
        )
    except ValueError as error:
        print(f"alerts: {error}", file=err)
        return 2
    text = manifest_text(rule, _options(args))
    if args.check:
        committed = MANIFEST_FILE.read_text() if MANIFEST_FILE.exists() else ""
        if committed != text:
            print(f"alerts: {MANIFEST_FILE.name} is not what the rule file gives: run {REGENERATE}", file=err)
            return 1
        print(f"alerts: {MANIFEST_FILE.name} is up to date", file=err)
        return 0
    if args.output:
        args.output.write_text(text)
        print(f"alerts: wrote {args.output}", file=err)
    else:
        out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
