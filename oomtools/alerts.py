"""The alerts of alerts/oom-killer.rules.yaml seen from outside the stack, in two parts.

What `make verify` asks Prometheus: which of the alerts are firing for the stack's namespace, from when, and whether
they resolved. Stdlib HTTP only (Prometheus' JSON API), with a bearer token and a CA bundle for one behind auth.

The rules as a ready PrometheusRule manifest (alerts/oom-killer.prometheusrule.yaml) for a Prometheus Operator that
Pulumi does not manage, such as kube-prometheus-stack's: generated from the rule file, with the `release` label the
chart's default ruleSelector matches; optionally scoped to chosen namespaces or without chosen alerts.

    python -m oomtools.alerts --output alerts/oom-killer.prometheusrule.yaml   # regenerate the committed manifest
    python -m oomtools.alerts --check                                         # exit 1 if it is out of date
    python -m oomtools.alerts --labels release=prometheus --watch-namespaces 'oom-killer|team-a' > my-rules.yaml
    python -m oomtools.alerts --ignore-namespaces 'oom-killer.*' --omit-alert ContainerCrashLooping > my-rules.yaml
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import shlex
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import yaml

from infra.monitoring import PROMETHEUS_RULE_API_VERSION, PROMETHEUS_RULE_NAME, RULES_FILE, parse_labels, rule_groups

DEFAULT_ALERTS: Final = ("ContainerOOMKilled", "ContainerCrashLooping", "ContainerOOMKillWithoutRestart")


@dataclass(frozen=True)
class Access:
    """How to reach a Prometheus behind auth: a bearer token (sent as `Authorization: Bearer`), a CA bundle that
    signed its TLS certificate, or no certificate check at all (a self-signed certificate on a port-forward)."""

    bearer_token: str | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer_token}"} if self.bearer_token else {}

    def tls_context(self) -> ssl.SSLContext:
        """The system's trust store, plus ca_file; or no check at all."""
        if self.insecure_skip_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


OPEN: Final = Access()  # a Prometheus that asks for nothing (a port-forward to its own port, a test's loopback)


class PrometheusUnreachable(Exception):
    """Prometheus did not answer, or answered something that is not its API."""


class AlertmanagerUnreachable(Exception):
    """Alertmanager did not answer, or answered something that is not its API."""


def _fetch(
    base_url: str, path: str, access: Access, timeout: float, unreachable: type[Exception] = PrometheusUnreachable
) -> Any:
    """The JSON an API answers at path; `unreachable` (one line, the URL first) when it does not."""
    url = urllib.parse.urljoin(base_url.rstrip("/") + "/", path.lstrip("/"))
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise unreachable(f"{base_url} is not an http(s) URL")
    request = urllib.request.Request(url, headers=access.headers())  # noqa: S310 (scheme checked above)
    context = access.tls_context() if scheme == "https" else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return json.load(response)
    except urllib.error.HTTPError as error:  # answered, but not with the API: 401/403 behind auth, 404 a wrong path
        raise unreachable(f"{url}: HTTP {error.code} {error.reason}") from error
    except (OSError, ValueError) as error:  # URLError (refused, a certificate not trusted), timeouts, bad JSON
        raise unreachable(f"{url}: {error}") from error


def _get(base_url: str, path: str, timeout: float = 5.0, access: Access = OPEN) -> Any:
    body = _fetch(base_url, path, access, timeout)
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusUnreachable(f"{base_url.rstrip('/')}/{path.lstrip('/')}: not a Prometheus API answer")
    return body["data"]


def check_reachable(base_url: str, access: Access = OPEN) -> str:
    """Prometheus' version, or PrometheusUnreachable."""
    data = _get(base_url, "/api/v1/status/buildinfo", access=access)
    return str(data.get("version", "?"))


def query(base_url: str, promql: str, access: Access = OPEN) -> list[dict[str, Any]]:
    """An instant query's result (a vector's samples)."""
    path = "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    result: list[dict[str, Any]] = _get(base_url, path, access=access)["result"]
    return result


def rule_names(base_url: str, access: Access = OPEN) -> set[str]:
    """The alerting rules Prometheus has loaded."""
    data = _get(base_url, "/api/v1/rules?type=alert", access=access)
    return {rule["name"] for group in data["groups"] for rule in group["rules"]}


def firing(
    base_url: str, names: tuple[str, ...], namespace: str, access: Access = OPEN
) -> dict[str, list[dict[str, str]]]:
    """For each alert name, the label sets of its firing alerts in the namespace (pending ones are not yet alerts)."""
    found: dict[str, list[dict[str, str]]] = {name: [] for name in names}
    for alert in _get(base_url, "/api/v1/alerts", access=access)["alerts"]:
        labels = alert["labels"]
        if alert["state"] == "firing" and labels.get("alertname") in found and labels.get("namespace") == namespace:
            found[labels["alertname"]].append(labels)
    return found


def samples(
    base_url: str, selector: str, since: float, until: float, access: Access = OPEN
) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """Every sample Prometheus stored for a selector from `since` to `until`: each series' labels and its (scrape
    time, value) pairs, oldest first (a range selector's raw samples, not a query_range's resampling)."""
    window = max(1, math.ceil(until - since))
    path = "/api/v1/query?" + urllib.parse.urlencode({"query": f"{selector}[{window}s]", "time": f"{until:.3f}"})
    found = [
        (series["metric"], [(float(stamp), float(value)) for stamp, value in series["values"] if float(stamp) >= since])
        for series in _get(base_url, path, access=access)["result"]
    ]
    return [(labels, points) for labels, points in found if points]  # the window asked was whole seconds


@dataclass(frozen=True)
class Routed:
    """An alert as Alertmanager holds it: active (to be sent to its receivers), suppressed (silenced or inhibited)
    or unprocessed, and the receivers its route sends it to."""

    labels: dict[str, str]
    state: str
    receivers: tuple[str, ...]


def alertmanager_alerts(base_url: str, namespace: str, access: Access = OPEN) -> list[Routed]:
    """The alerts Alertmanager holds for the namespace (API v2), silenced and inhibited ones included."""
    path = "/api/v2/alerts?" + urllib.parse.urlencode({"filter": f'namespace="{namespace}"'})
    body = _fetch(base_url, path, access, 5.0, AlertmanagerUnreachable)
    if not isinstance(body, list):
        raise AlertmanagerUnreachable(f"{base_url}: not an Alertmanager API v2 answer")
    return [
        Routed(
            dict(alert.get("labels", {})),
            str(alert.get("status", {}).get("state", "unprocessed")),
            tuple(str(receiver.get("name")) for receiver in alert.get("receivers", [])),
        )
        for alert in body
    ]


def alertmanager_version(base_url: str, access: Access = OPEN) -> str:
    """Alertmanager's version, or AlertmanagerUnreachable."""
    body = _fetch(base_url, "/api/v2/status", access, 5.0, AlertmanagerUnreachable)
    if not isinstance(body, dict) or "versionInfo" not in body:
        raise AlertmanagerUnreachable(f"{base_url}: not an Alertmanager API v2 answer")
    return str(body["versionInfo"].get("version", "?"))


@dataclass
class AlertRecord:
    """One alert over the run: when verify first saw it firing and, after that, when it saw it gone."""

    name: str
    expected: bool  # the stack's settings predict it fires (asked-for alerts always are)
    fired_at: float | None = None
    resolved_at: float | None = None

    def observe(self, is_firing: bool, now: float) -> None:
        if is_firing and self.fired_at is None:
            self.fired_at = now
        elif not is_firing and self.fired_at is not None and self.resolved_at is None:
            self.resolved_at = now
        elif is_firing and self.resolved_at is not None:
            self.resolved_at = None  # fired again: not resolved after all

    def latency(self, kill_at: float | None) -> float | None:
        """Seconds from the kill to verify seeing the alert fire (within verify's poll interval)."""
        if self.fired_at is None or kill_at is None:
            return None
        return self.fired_at - kill_at

    @property
    def as_predicted(self) -> bool:
        return (self.fired_at is not None) == self.expected


# ---------------------------------------------------------------------------------------------------------------
# The rules as a PrometheusRule manifest, for a Prometheus Operator without Pulumi

MANIFEST_FILE: Final = RULES_FILE.with_name("oom-killer.prometheusrule.yaml")
REGENERATE: Final = "venv/bin/python -m oomtools.alerts --output alerts/oom-killer.prometheusrule.yaml"
# kube-prometheus-stack's Prometheus selects PrometheusRules labelled `release: <its Helm release>` (its values'
# ruleSelectorNilUsesHelmValues: true, the default); the chart's README installs the release as kube-prometheus-stack.
DEFAULT_RELEASE: Final = "kube-prometheus-stack"
# The app's name as the stack labels its objects (infra.kube.APP; not imported: that module brings the Pulumi SDK).
DEFAULT_MANIFEST_LABELS: Final = {"app.kubernetes.io/name": "oom-killer", "release": DEFAULT_RELEASE}

# PromQL words that are not metric names: binary and set operators, modifiers, the literals, and the aggregations
# (an aggregation is followed by `(` or by `by`/`without`; a metric of that name would not be).
_KEYWORDS: Final = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_LABEL_LISTS: Final = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS: Final = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
)
_STRING = r""""(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`"""
_TOKEN: Final = re.compile(
    rf"""(?P<string>{_STRING})
    |(?P<matchers>\{{(?:{_STRING}|[^}}"'`])*\}})
    |(?P<range>\[[^\]]*\])
    |(?P<comment>\#[^\n]*)
    |(?P<space>\s+)
    |(?P<number>\d[\w.]*)
    |(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_NAMESPACE_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _tokens(expr: str) -> list[tuple[str, str]]:
    return [(str(match.lastgroup), match.group()) for match in _TOKEN.finditer(expr)]


def _promql_string(text: str) -> str:
    """text as a PromQL double-quoted string (Go's escapes: a regexp's backslash is written twice)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_namespace_regex(regex: str) -> None:
    """ValueError unless regex is one Prometheus takes as a label matcher's (RE2: no lookaround, no backreference)."""
    if not regex or "\n" in regex:
        raise ValueError(f"{regex!r}: give a one-line regular expression")
    try:
        re.compile(regex)
    except re.error as error:
        raise ValueError(f"{regex!r} is not a regular expression ({error})") from None
    if re.search(r"\(\?<?[=!]|\\[1-9]", regex):
        raise ValueError(
            f"{regex!r}: Prometheus' regular expressions (RE2) have no lookaround or backreference; "
            "to leave namespaces out, use --ignore-namespaces"
        )


def scope_expr(expr: str, namespaces: str, ignore: bool = False) -> str:
    """expr with `namespace=~"<namespaces>"` (with ignore, `namespace!~`) added to every series selector in it, so
    that it sees only the namespaces the regular expression matches (or all but those). Prometheus anchors the
    expression: `oom-killer|team-.*`."""
    check_namespace_regex(namespaces)
    matcher = f"namespace{'!~' if ignore else '=~'}{_promql_string(namespaces)}"
    tokens = _tokens(expr)

    def following(index: int) -> tuple[int, str, str]:
        """The next token after index that is not space or a comment: (its index, kind, text)."""
        for later in range(index + 1, len(tokens)):
            if tokens[later][0] not in ("space", "comment"):
                return (later, *tokens[later])
        return len(tokens), "", ""

    out: list[str] = []
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        if kind == "name" and text in _LABEL_LISTS:  # `by (namespace, pod)`: label names, copied as they are
            close = next((i for i in range(index, len(tokens)) if tokens[i][1] == ")"), len(tokens) - 1)
            out.extend(token for _, token in tokens[index : close + 1])
            index = close + 1
            continue
        if kind == "name" and text.lower() not in _KEYWORDS:
            later, next_kind, next_text = following(index)
            call = next_text == "(" or (text in _AGGREGATIONS and next_text in ("by", "without"))
            if not call:  # a metric name: scope its matchers, or give it some
                if next_kind == "matchers":
                    out.extend(token for _, token in tokens[index:later])
                    out.append(_with_matcher(next_text, matcher))
                    index = later + 1
                else:
                    out.append(f"{text}{{{matcher}}}")
                    index += 1
                continue
        if kind == "matchers":  # a selector without a metric name: {__name__=~"..."}
            out.append(_with_matcher(text, matcher))
        else:
            out.append(text)
        index += 1
    return "".join(out)


def _with_matcher(matchers: str, matcher: str) -> str:
    inside = matchers[1:-1].rstrip()
    inside = inside.removesuffix(",").rstrip()
    return "{" + (f"{inside}, {matcher}" if inside else matcher) + "}"


def scoped_groups(groups: list[dict[str, Any]], namespaces: str, ignore: bool = False) -> list[dict[str, Any]]:
    """The groups with every rule's expression scoped to the namespaces (see scope_expr); the rest as it is."""
    scoped = copy.deepcopy(groups)
    for group in scoped:
        for rule in group["rules"]:
            rule["expr"] = scope_expr(rule["expr"], namespaces, ignore)
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
) -> dict[str, Any]:
    """The PrometheusRule for the rule file: the default labels updated by labels; the groups scoped and trimmed as
    asked (as they are otherwise)."""
    groups = rule_groups(rules_file)
    if omit:
        groups = without_alerts(groups, omit)
    if watch_namespaces is not None:
        groups = scoped_groups(groups, watch_namespaces)
    if ignore_namespaces is not None:
        groups = scoped_groups(groups, ignore_namespaces, ignore=True)
    return prometheus_rule(groups, {**DEFAULT_MANIFEST_LABELS, **(labels or {})}, namespace)


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
    args = parser.parse_args(argv)
    shaping = (args.output, args.labels, args.namespace, args.watch_namespaces, args.ignore_namespaces)
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
    return "".join(f" {shlex.quote(option)}" for option in options)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parse_args(argv)
        rule = generate(
            args.labels, args.namespace, args.watch_namespaces, args.ignore_namespaces, tuple(args.omit_alert)
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
