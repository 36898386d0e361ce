"""verify's command line: its exit codes, the two failures that end a run early, its options and their checks, and
how to reach Prometheus."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

from oomtools import alert_catalogue
from oomtools.arguments import Parser, UsageError, exit_codes

if TYPE_CHECKING:  # imported where used: --help, bad arguments and completion need neither Prometheus nor a cluster
    from oomtools import alert_client as prom

EXIT_AS_PREDICTED: Final = 0
EXIT_NOT_AS_PREDICTED: Final = 1
EXIT_BAD_ARGUMENTS: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_NOTHING_CHECKED: Final = 4
EXIT_INTERRUPTED: Final = 130
DEFAULT_DETECTOR_GRACE_SECONDS: Final = 120.0

# What --help says of each exit code.
CODE_MEANINGS: Final = {
    EXIT_AS_PREDICTED: "what the stack's settings predict was observed, and every alert asked for fired",
    EXIT_NOT_AS_PREDICTED: "it was not (the verdict line's failed= says which check)",
    EXIT_BAD_ARGUMENTS: "a bad argument (a --kubeconfig that is not there, a --context it lacks), or no deployed "
    "stack to read (no outputs, no Deployment)",
    EXIT_UNREACHABLE: "the cluster (asked again until --timeout), Prometheus or Alertmanager cannot be reached",
    EXIT_NOTHING_CHECKED: "nothing to hold the prediction to (verdict=nothing-checked, failed= says what): no node "
    "selected, or every kill came at start of a tmpfs restart",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

# What --help says verify is (the package's docstring points here).
DESCRIPTION: Final = """Watch a deployed stack through the Kubernetes API and say whether what its settings \
predict happened.

    oom-killer verify --stack dev --timeout 10m [--prometheus URL --alert NAME ...] [--junit FILE]
                                                                  (or: make verify ARGS="--timeout 10m ...")

The stack's namespace, Deployment and predicted time to the kill come from `pulumi stack output --json` (or
--outputs, the same JSON in a file or inline, for a machine without the Pulumi CLI); the pods' selector, replicas
and the workload's settings from the Deployment itself, on your kube context. It prints each container death
(reason, exit code, termination message, seconds from the container's start against the prediction, restart count)
and each back-off between a death and the next start as they happen, progress while it waits, and ends with one
verdict line. Each failure is one line and an exit code of its own, listed below.
"""

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class Unreachable(Exception):
    """The cluster, Prometheus or Alertmanager did not answer: one line says which."""


class BadArguments(Exception):
    """What was asked for cannot be run: one line says why."""


def parse_duration(text: str) -> float:
    """`10m`, `90s`, `1h30m`, or plain seconds, as seconds; ValueError otherwise."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration such as 10m, 90s or 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def duration(text: str) -> float:
    """An argparse type: a duration (parse_duration) of more than 0 seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return seconds


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """verify's arguments and help (for its own parser, and for `oom-killer verify` in the command's tree)."""
    parser.description = DESCRIPTION
    parser.epilog = exit_codes(CODE_MEANINGS)
    parser.add_argument("--stack", default="dev", help="the Pulumi stack whose outputs say what to watch")
    parser.add_argument(
        "--timeout", type=duration, default="10m", help="how long to watch at most (10m, 90s, 1h30m, or seconds)"
    )
    parser.add_argument("--prometheus", metavar="URL", help="Prometheus' URL: check the alerts too")
    parser.add_argument(
        "--prometheus-token-file",
        type=Path,
        metavar="FILE",
        help="send the token in FILE (one line) to Prometheus as `Authorization: Bearer <token>`",
    )
    parser.add_argument(
        "--prometheus-ca-file",
        type=Path,
        metavar="FILE",
        help="trust Prometheus' TLS certificate where this CA bundle (PEM) signed it, besides the system's",
    )
    parser.add_argument(
        "--prometheus-insecure-skip-verify",
        action="store_true",
        help="check no TLS certificate of Prometheus at all (a self-signed one on a port-forward: test clusters only)",
    )
    parser.add_argument(
        "--alert", action="append", default=[], metavar="NAME", help="an alert that must fire (repeatable)"
    )
    parser.add_argument(
        "--alertmanager",
        metavar="URL",
        help="Alertmanager's URL: check that it holds each alert that fired for its receivers (needs --prometheus)",
    )
    parser.add_argument(
        "--detector-grace",
        type=duration,
        metavar="DURATION",
        help="with --prometheus: how long after the watch to wait for every signal to show the last kills (a "
        "scrape interval, cAdvisor's housekeeping, Alertmanager's group_wait), at most (default: 2m)",
    )
    parser.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report here")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="write one self-contained HTML page here: memory over time per pod, the timeline, the tables, every "
        "check and the verdict (docs/report.md)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        metavar="FILE",
        help="write everything observed (pods, kills, logs, samples, alerts, events) here as JSON, to judge again "
        "with --from",
    )
    parser.add_argument(
        "--from",
        dest="from_results",
        type=Path,
        metavar="FILE",
        help="judge and report results saved with --save, with no cluster: the same checks, verdict and exit code",
    )
    parser.add_argument("--kills", type=int, default=2, help="OOM kills to see before the verdict")
    parser.add_argument(
        "--wait-resolved",
        action="store_true",
        help="after the alerts fired, watch for the stack "
        "to be scaled down or destroyed and the alerts to resolve, until the timeout",
    )
    parser.add_argument(
        "--outputs",
        metavar="FILE|JSON",
        help="the stack's outputs as `pulumi stack output --json` prints them, in a file or inline (a value "
        "starting with '{'), instead of asking pulumi",
    )
    parser.add_argument(
        "--vpa",
        action="store_true",
        help="watch VPA answer the hog's OOM kills instead (a stack with vpa set and a memoryCeilingMb above its "
        "limit): the recommendation before and after, how and when it was applied, and whether the hog then holds",
    )
    parser.add_argument("--kubeconfig", help="a kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", help="a kube context (default: the current one)")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    try:
        args = configure(Parser(prog="oom-killer verify")).parse_args(argv)
    except UsageError as error:
        raise BadArguments(str(error)) from error
    if args.detector_grace is not None and not args.prometheus:
        raise BadArguments("--detector-grace needs --prometheus: without it there is nothing to wait for")
    if args.detector_grace is None:
        args.detector_grace = DEFAULT_DETECTOR_GRACE_SECONDS
    if args.alertmanager and not args.prometheus:
        raise BadArguments("--alertmanager needs --prometheus: the alerts it delivers are Prometheus' rules")
    if args.alert and not args.prometheus:
        raise BadArguments("--alert needs --prometheus: where would the alert fire?")
    for option in ("prometheus_token_file", "prometheus_ca_file", "prometheus_insecure_skip_verify"):
        if getattr(args, option) and not args.prometheus:
            raise BadArguments(f"--{option.replace('_', '-')} needs --prometheus")
    if args.prometheus_ca_file and args.prometheus_insecure_skip_verify:
        raise BadArguments("--prometheus-ca-file and --prometheus-insecure-skip-verify: check the certificate or not")
    if args.from_results is not None:
        watching = [
            option
            for option in ("prometheus", "alertmanager", "alert", "outputs", "save", "kubeconfig", "context")
            if getattr(args, option)
        ]
        if watching:
            raise BadArguments(
                f"--from judges saved results: --{watching[0].replace('_', '-')} is for a watch (the saved file "
                "says what was read)"
            )
    if args.vpa:
        others = [
            option
            for option in ("prometheus", "alertmanager", "from_results", "save", "report", "junit")
            if getattr(args, option)
        ]
        if others:
            raise BadArguments(
                f"--vpa watches VPA's answer alone: --{others[0].replace('_results', '').replace('_', '-')} is for the "
                "kill loop's watch (run it apart)"
            )
    if args.kills < 1:
        raise BadArguments(f"--kills {args.kills}: must be at least 1")
    unknown = sorted(set(args.alert) - set(alert_catalogue.NAMES))
    if unknown:
        raise BadArguments(
            f"--alert {unknown[0]}: not an alert of alerts/oom-killer.rules.yaml ({', '.join(alert_catalogue.NAMES)})"
        )
    return args


def prometheus_access(args: argparse.Namespace) -> prom.Access:
    """How to reach Prometheus: its token (read from the file, which keeps it out of `ps` and shell history), the CA
    bundle that signed its certificate, or no certificate check."""
    from oomtools import alert_client as prom

    token = None
    if args.prometheus_token_file is not None:
        try:
            token = args.prometheus_token_file.read_text().strip()
        except OSError as error:
            raise BadArguments(f"--prometheus-token-file {args.prometheus_token_file}: {error.strerror}") from error
        if not token:
            raise BadArguments(f"--prometheus-token-file {args.prometheus_token_file}: the file is empty")
    ca_file = args.prometheus_ca_file
    if ca_file is not None and not ca_file.is_file():
        raise BadArguments(f"--prometheus-ca-file {ca_file}: no such file")
    return prom.Access(token, ca_file, args.prometheus_insecure_skip_verify)
