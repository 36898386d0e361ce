"""Watch a deployed stack through the Kubernetes API and say whether what its settings predict happened.

    oom-killer verify --stack dev --timeout 10m [--prometheus URL --alert NAME ...] [--junit FILE]
                                                                  (or: make verify ARGS="--timeout 10m ...")

The stack's namespace, Deployment and predicted time to the kill come from `pulumi stack output --json` (or
--outputs, the same JSON in a file or inline, for a machine without the Pulumi CLI); the pods' selector, replicas
and the workload's settings from the Deployment itself, on your kube context. It prints each container death
(reason, exit code, termination message, seconds from the container's start against the prediction, restart count)
and each back-off between a death and the next start as they happen, progress while it waits, and ends with one
verdict line. Each failure is one line and an exit code of its own, listed below.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from oomtools.arguments import Parser, UsageError, exit_codes
from workload import logfmt
from workload.predict import KillRange

if TYPE_CHECKING:  # imported where used: --help, bad arguments and completion need neither Prometheus nor a cluster
    from oomtools import alerts as prom

EXIT_AS_PREDICTED: Final = 0
EXIT_NOT_AS_PREDICTED: Final = 1
EXIT_BAD_ARGUMENTS: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_INTERRUPTED: Final = 130

# What --help says of each exit code.
CODE_MEANINGS: Final = {
    EXIT_AS_PREDICTED: "what the stack's settings predict was observed, and every alert asked for fired",
    EXIT_NOT_AS_PREDICTED: "it was not (the verdict line's failed= says which check)",
    EXIT_BAD_ARGUMENTS: "a bad argument, or no deployed stack to read (no outputs, no Deployment)",
    EXIT_UNREACHABLE: "the cluster or Prometheus cannot be reached",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

OOM_EXIT_CODE: Final = 137
# Kubernetes timestamps are whole seconds, and the container's start includes the interpreter's own (slower under
# a CPU limit than the prediction, which counts the steps only): a kill is on time from a second before the earliest
# prediction to the latest one plus half of it (at least 5 s).
EARLY_SLACK_SECONDS: Final = 1.0
LATE_SLACK_MIN_SECONDS: Final = 5.0
POLL_SECONDS: Final = 1.0
PROGRESS_SECONDS: Final = 15.0

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class Unreachable(Exception):
    """The cluster did not answer."""


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


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return seconds


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """verify's arguments and help (for its own parser, and for `oom-killer verify` in the command's tree)."""
    parser.description = __doc__
    parser.epilog = exit_codes(CODE_MEANINGS)
    parser.add_argument("--stack", default="dev", help="the Pulumi stack whose outputs say what to watch")
    parser.add_argument(
        "--timeout", type=_duration, default="10m", help="how long to watch at most (10m, 90s, 1h30m, or seconds)"
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
    parser.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report here")
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
    parser.add_argument("--kubeconfig", help="a kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", help="a kube context (default: the current one)")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    from oomtools import alerts as prom

    try:
        args = configure(Parser(prog="oom-killer verify")).parse_args(argv)
    except UsageError as error:
        raise BadArguments(str(error)) from error
    if args.alert and not args.prometheus:
        raise BadArguments("--alert needs --prometheus: where would the alert fire?")
    for option in ("prometheus_token_file", "prometheus_ca_file", "prometheus_insecure_skip_verify"):
        if getattr(args, option) and not args.prometheus:
            raise BadArguments(f"--{option.replace('_', '-')} needs --prometheus")
    if args.prometheus_ca_file and args.prometheus_insecure_skip_verify:
        raise BadArguments("--prometheus-ca-file and --prometheus-insecure-skip-verify: check the certificate or not")
    if args.kills < 1:
        raise BadArguments(f"--kills {args.kills}: must be at least 1")
    unknown = sorted(set(args.alert) - set(prom.DEFAULT_ALERTS))
    if unknown:
        raise BadArguments(
            f"--alert {unknown[0]}: not an alert of alerts/oom-killer.rules.yaml ({', '.join(prom.DEFAULT_ALERTS)})"
        )
    return args


def prometheus_access(args: argparse.Namespace) -> prom.Access:
    """How to reach Prometheus: its token (read from the file, which keeps it out of `ps` and shell history), the CA
    bundle that signed its certificate, or no certificate check."""
    from oomtools import alerts as prom

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


def stack_outputs(stack: str, outputs: str | None) -> dict[str, Any]:
    """The stack's outputs, as `pulumi stack output --json` prints them: from --outputs (a file, or the JSON itself
    where it starts with `{`), else from the Pulumi CLI."""
    if outputs is not None and outputs.lstrip().startswith("{"):
        text, source = outputs, "--outputs"
    elif outputs is not None:
        try:
            text, source = Path(outputs).read_text(), f"--outputs {outputs}"
        except OSError as error:
            raise BadArguments(f"--outputs {outputs}: {error.strerror} (a file, or the JSON itself)") from error
    else:
        try:
            done = subprocess.run(
                ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
        except FileNotFoundError as error:
            raise BadArguments(
                "no pulumi CLI on PATH to read the stack's outputs (or give --outputs FILE or --outputs '{...}')"
            ) from error
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise BadArguments(f"pulumi stack output --stack {stack} failed: {last}")
        text, source = done.stdout, f"pulumi stack output --stack {stack}"
    try:
        found = json.loads(text)
    except ValueError as error:
        raise BadArguments(f"the stack's outputs ({source}) are not JSON: {error}") from error
    if not isinstance(found, dict) or not found.get("namespace") or not found.get("deploymentName"):
        raise BadArguments(f"stack {stack} has no namespace and deploymentName outputs: is it deployed (make up)?")
    return found


# ---------------------------------------------------------------------------------------------------------------
# What the stack's settings predict, and what was seen


@dataclass(frozen=True)
class Prediction:
    kills: bool  # no ceiling and replicas > 0
    supervised: bool  # PROCESS_MODEL=supervised: the kills are the worker's, the container lives on
    earliest: float | None
    latest: float | None
    replicas: int
    steps: KillRange | None = None  # the steps in which a kill may come (predictedOomKillStep); None: not exported

    def kill_step(self, death: Death) -> int:
        """The step a death came in: one past the step its termination message (the last step line) names."""
        logged = logfmt.parse(death.message).get("step", "0") if death.message.startswith("event=step") else "0"
        return int(logged) + 1 if logged.isdigit() else 1

    def in_announced_steps(self, death: Death) -> bool:
        return self.steps is None or self.steps.holds(self.kill_step(death))

    def on_time(self, seconds: float) -> bool:
        if self.earliest is None or self.latest is None:
            return False
        late = max(LATE_SLACK_MIN_SECONDS, self.latest / 2)
        return self.earliest - EARLY_SLACK_SECONDS <= seconds <= self.latest + late

    def alerts_expected(self) -> dict[str, bool]:
        """Which of the rule file's alerts the settings predict to fire for this namespace."""
        single = self.kills and not self.supervised
        return {
            "ContainerOOMKilled": single,
            "ContainerCrashLooping": single,
            "ContainerOOMKillWithoutRestart": self.kills and self.supervised,
        }


def predict(outputs: dict[str, Any], replicas: int, env: dict[str, str]) -> Prediction:
    predicted = outputs.get("predictedSecondsToOomKill") or None
    supervised = env.get("PROCESS_MODEL", "single") == "supervised"
    earliest = float(predicted["earliest"]) if predicted else None
    latest = float(predicted["latest"]) if predicted else None
    step = outputs.get("predictedOomKillStep") or None
    steps = None if not step else KillRange(int(step["earliest"]), int(step["latest"]), int(step["latest"]), 0)
    return Prediction(predicted is not None and replicas > 0, supervised, earliest, latest, replicas, steps)


@dataclass
class Death:
    pod: str
    container: str
    container_id: str
    reason: str
    exit_code: int
    message: str
    started_at: datetime.datetime
    finished_at: datetime.datetime
    restart_count: int  # the container's restart count when this death was seen

    @property
    def seconds_from_start(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


@dataclass
class BackOff:
    pod: str
    container: str
    seconds: float  # from a death to the next container's start
    restart_count: int


@dataclass
class WorkerKill:
    pod: str
    container: str
    at: datetime.datetime
    fields: dict[str, str]


@dataclass
class Observed:
    deaths: dict[str, Death] = field(default_factory=dict)  # by container ID
    back_offs: dict[str, BackOff] = field(default_factory=dict)  # by the ID of the death it followed
    worker_kills: dict[tuple[str, str, str], WorkerKill] = field(default_factory=dict)
    restarts: dict[tuple[str, str], int] = field(default_factory=dict)
    running: set[tuple[str, str]] = field(default_factory=set)
    pods_seen: set[str] = field(default_factory=set)
    gone: bool = False  # the stack was scaled to 0 or its namespace deleted during the run
    gone_at: float | None = None

    def first_kill_at(self) -> float | None:
        times = [d.finished_at.timestamp() for d in self.deaths.values() if d.reason == "OOMKilled"]
        times += [k.at.timestamp() for k in self.worker_kills.values()]
        return min(times) if times else None


def _terminated(pod: str, container: str, state: Any, restart_count: int) -> Death | None:
    if state is None or state.terminated is None or not state.terminated.container_id:
        return None
    t = state.terminated
    return Death(
        pod,
        container,
        t.container_id,
        t.reason or "?",
        int(t.exit_code),
        (t.message or "").strip(),
        t.started_at,
        t.finished_at,
        restart_count,
    )


def record_pods(observed: Observed, pods: list[Any], say: Callable[[str], None]) -> None:
    """Take in one listing of the stack's pods: new deaths, the back-off that ended in a start, restart counts."""
    observed.running = set()
    for pod in pods:
        name = pod.metadata.name
        observed.pods_seen.add(name)
        for status in pod.status.container_statuses or []:
            key = (name, status.name)
            observed.restarts[key] = status.restart_count
            for state in (status.last_state, status.state):
                death = _terminated(name, status.name, state, status.restart_count)
                if death is not None and death.container_id not in observed.deaths:
                    observed.deaths[death.container_id] = death
                    say(
                        logfmt.line(
                            event="death",
                            pod=name,
                            container=status.name,
                            reason=death.reason,
                            exit_code=death.exit_code,
                            seconds_from_start=round(death.seconds_from_start, 1),
                            restart_count=status.restart_count,
                            termination_message=death.message,
                        )
                    )
            started = status.state.running.started_at if status.state and status.state.running else None
            if started is not None:
                observed.running.add(key)
                _record_back_off(
                    observed, name, status.name, status.container_id or "", started, status.restart_count, say
                )


def _record_back_off(
    observed: Observed,
    pod: str,
    container: str,
    running_id: str,
    started: datetime.datetime,
    restarts: int,
    say: Callable[[str], None],
) -> None:
    previous = [
        d
        for d in observed.deaths.values()
        if d.pod == pod and d.container == container and d.container_id != running_id and d.finished_at <= started
    ]
    if not previous:
        return
    last = max(previous, key=lambda d: d.finished_at)
    if last.container_id in observed.back_offs:
        return
    back_off = BackOff(pod, container, (started - last.finished_at).total_seconds(), restarts)
    observed.back_offs[last.container_id] = back_off
    say(
        logfmt.line(
            event="restart",
            pod=pod,
            container=container,
            back_off_seconds=round(back_off.seconds, 1),
            restart_count=restarts,
        )
    )


def record_worker_kills(observed: Observed, pod: str, container: str, log: str, say: Callable[[str], None]) -> None:
    """The supervised workload's own `event=child_exit` lines (kubelet-timestamped) for workers the kernel killed."""
    for line in log.splitlines():
        stamp, _, text = line.partition(" ")
        if "event=child_exit" not in text:
            continue
        fields = logfmt.parse(text)
        if fields.get("signal") != "SIGKILL":
            continue
        key = (pod, container, stamp)
        if key in observed.worker_kills:
            continue
        at = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        observed.worker_kills[key] = WorkerKill(pod, container, at, fields)
        say(
            logfmt.line(
                event="worker_kill",
                pod=pod,
                container=container,
                at=stamp,
                oom_kill=fields.get("oom_kill", "?"),
                container_survived=fields.get("container_survived"),
            )
        )


# ---------------------------------------------------------------------------------------------------------------
# The verdict


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def checks_for(
    prediction: Prediction, observed: Observed, wanted_kills: int, alert_records: list[prom.AlertRecord]
) -> list[Check]:
    checks: list[Check] = []
    deaths = sorted(observed.deaths.values(), key=lambda d: d.finished_at)
    if prediction.replicas == 0:
        checks.append(Check("no pod runs (replicas=0)", not observed.pods_seen, f"pods={len(observed.pods_seen)}"))
    elif not prediction.kills:
        checks.append(
            Check(
                "no container dies (a ceiling holds it)",
                not deaths and bool(observed.running),
                f"deaths={len(deaths)} running={len(observed.running)}",
            )
        )
    elif prediction.supervised:
        kills = len(observed.worker_kills)
        restarts = sum(observed.restarts.values())
        checks.append(Check("the kernel kills the worker", kills >= 1, f"worker_kills={kills}"))
        checks.append(
            Check("the container lives on", not deaths and restarts == 0, f"deaths={len(deaths)} restarts={restarts}")
        )
    else:
        oom = [d for d in deaths if d.reason == "OOMKilled" and d.exit_code == OOM_EXIT_CODE]
        others = [d for d in deaths if d not in oom]
        checks.append(
            Check(
                f"{wanted_kills} OOM kills (OOMKilled, exit code 137)",
                len(oom) >= wanted_kills,
                f"oom_kills={len(oom)}",
            )
        )
        checks.append(
            Check("no other death", not others, " ".join(f"{d.reason}/{d.exit_code}" for d in others) or "none")
        )
        if prediction.steps is not None:
            steps = prediction.steps
            checks.append(
                Check(
                    "each kill in an announced step",
                    bool(oom) and all(prediction.in_announced_steps(d) for d in oom),
                    f"predicted_steps={steps.earliest}..{steps.latest} seen="
                    + ",".join(f"{prediction.kill_step(d)}({steps.where(prediction.kill_step(d))})" for d in oom),
                )
            )
        late = [d for d in oom if not prediction.on_time(d.seconds_from_start)]
        checks.append(
            Check(
                "each kill on time",
                bool(oom) and not late,
                f"predicted={prediction.earliest:g}..{prediction.latest:g}s seen="
                + ",".join(f"{d.seconds_from_start:g}" for d in oom),
            )
        )
        if wanted_kills > 1:
            checks.append(
                Check(
                    "a back-off measured between restarts",
                    bool(observed.back_offs),
                    f"back_offs={len(observed.back_offs)}",
                )
            )
    for record in alert_records:
        verb = "fires" if record.expected else "stays quiet"
        state = "fired" if record.fired_at is not None else "quiet"
        checks.append(Check(f"alert {record.name} {verb}", record.as_predicted, state))
    return checks


def write_junit(path: Path, checks: list[Check], seconds: float) -> None:
    suite = ET.Element(
        "testsuite",
        name="oom-killer verify",
        tests=str(len(checks)),
        failures=str(sum(not c.ok for c in checks)),
        time=f"{seconds:.1f}",
    )
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname="oom-killer.verify", name=check.name)
        if not check.ok:
            ET.SubElement(case, "failure", message=check.detail).text = check.detail
        else:
            ET.SubElement(case, "system-out").text = check.detail
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


# ---------------------------------------------------------------------------------------------------------------
# The cluster


def kube_api(kubeconfig: str | None, context: str | None) -> Any:
    from kubernetes import client, config  # imported here: `--help` and bad arguments need no client
    from kubernetes.config.config_exception import ConfigException

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, TypeError) as error:
        raise Unreachable(f"no usable kube context ({error})") from error
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client)


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """An API call; a connection failure is Unreachable, an API error is raised as it is."""
    import urllib3

    try:
        return function(*args, _request_timeout=10, **kwargs)
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise Unreachable(f"the cluster does not answer ({error})") from error


def _not_found(error: Exception) -> bool:
    return getattr(error, "status", None) == 404


def read_deployment(apps: Any, namespace: str, name: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return _call(apps.read_namespaced_deployment, name, namespace)
    except ApiException as error:
        if _not_found(error):
            return None
        raise Unreachable(f"reading deployment {namespace}/{name}: {error.status} {error.reason}") from error


def run(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], float] = time.time) -> int:
    from oomtools import alerts as prom

    access = prometheus_access(args)
    outputs = stack_outputs(args.stack, args.outputs)
    namespace, deployment_name = str(outputs["namespace"]), str(outputs["deploymentName"])
    core, apps = kube_api(args.kubeconfig, args.context)
    deployment = read_deployment(apps, namespace, deployment_name)
    if deployment is None:
        raise BadArguments(f"no deployment {namespace}/{deployment_name} on this kube context: deploy it (make up)")
    selector = ",".join(f"{k}={v}" for k, v in sorted(deployment.spec.selector.match_labels.items()))
    container = deployment.spec.template.spec.containers[0]
    env = {e.name: e.value or "" for e in container.env or []}
    prediction = predict(outputs, int(deployment.spec.replicas or 0), env)

    names = tuple(args.alert) or (prom.DEFAULT_ALERTS if args.prometheus else ())
    expected = prediction.alerts_expected()
    records = [prom.AlertRecord(name, expected=bool(args.alert) or expected[name]) for name in names]
    if args.prometheus:
        try:
            version = prom.check_reachable(args.prometheus, access)
            loaded = prom.rule_names(args.prometheus, access)
        except prom.PrometheusUnreachable as error:
            raise Unreachable(f"Prometheus does not answer: {error}") from error
        missing = [name for name in names if name not in loaded]
        print(f"verify: Prometheus {version} at {args.prometheus}", file=err)
        if missing:
            print(
                f"verify: Prometheus has no rule {', '.join(missing)}: load alerts/oom-killer.rules.yaml "
                "(or prometheusRule=true)",
                file=err,
            )

    print(
        logfmt.line(
            event="watch",
            namespace=namespace,
            selector=selector,
            replicas=prediction.replicas,
            predicted_seconds=f"{prediction.earliest}..{prediction.latest}" if prediction.kills else "none",
            predicted_steps="none"
            if prediction.steps is None or not prediction.kills
            else f"{prediction.steps.earliest}..{prediction.steps.latest}",
            process_model="supervised" if prediction.supervised else "single",
            alerts=",".join(names) or "none",
        ),
        file=out,
        flush=True,
    )
    started = clock()
    observed = Observed()

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    from kubernetes.client.exceptions import ApiException

    last_progress = started
    last_prometheus = 0.0
    while True:
        now = clock()
        try:
            pods = _call(core.list_namespaced_pod, namespace, label_selector=selector).items
        except ApiException as error:
            if not _not_found(error):
                raise Unreachable(f"listing pods: {error.status} {error.reason}") from error
            pods = []
        record_pods(observed, pods, say)
        if prediction.supervised:
            for pod in pods:
                for status in pod.status.container_statuses or []:
                    if status.state and status.state.running:
                        try:
                            log = _call(
                                core.read_namespaced_pod_log,
                                pod.metadata.name,
                                namespace,
                                container=status.name,
                                timestamps=True,
                            )
                        except ApiException:
                            continue
                        record_worker_kills(observed, pod.metadata.name, status.name, log, say)
        if not observed.gone and prediction.replicas > 0:
            current = read_deployment(apps, namespace, deployment_name)
            if current is None or not current.spec.replicas:
                observed.gone, observed.gone_at = True, now
                say(
                    logfmt.line(
                        event="stack_gone",
                        after_seconds=round(now - started, 1),
                        how="destroyed" if current is None else "scaled to 0",
                    )
                )
        if args.prometheus and now - last_prometheus >= 2 * POLL_SECONDS:
            last_prometheus = now
            try:
                active = prom.firing(args.prometheus, names, namespace, access)
            except prom.PrometheusUnreachable as error:
                raise Unreachable(f"Prometheus stopped answering: {error}") from error
            for record in records:
                was = record.fired_at, record.resolved_at
                record.observe(bool(active[record.name]), now)
                if (record.fired_at, record.resolved_at) != was:
                    say(_alert_line(record, observed))

        done = _evidence_complete(prediction, observed, args.kills)
        alerts_done = all(r.fired_at is not None for r in records if r.expected)
        resolving = observed.gone or args.wait_resolved
        resolved = all(r.resolved_at is not None for r in records if r.fired_at is not None)
        if done and alerts_done and (not resolving or (observed.gone and resolved)):
            break
        if now - started >= args.timeout:
            say(logfmt.line(event="timeout", after_seconds=round(now - started, 1)))
            break
        if now - last_progress >= PROGRESS_SECONDS:
            last_progress = now
            firing = ",".join(r.name for r in records if r.fired_at is not None and r.resolved_at is None)
            print(
                logfmt.line(
                    event="waiting",
                    seconds=round(now - started),
                    timeout=round(args.timeout),
                    deaths=len(observed.deaths),
                    worker_kills=len(observed.worker_kills),
                    restarts=sum(observed.restarts.values()),
                    firing=firing or "none",
                ),
                file=err,
                flush=True,
            )
        time.sleep(POLL_SECONDS)

    seconds = clock() - started
    checks = checks_for(prediction, observed, args.kills, records)
    for record in records:
        say(_alert_line(record, observed, summary=True))
    ok = all(check.ok for check in checks)
    failed = [check for check in checks if not check.ok]
    deaths = list(observed.deaths.values())
    back_offs = sorted(b.seconds for b in observed.back_offs.values())
    say(
        logfmt.line(
            verdict="as-predicted" if ok else "not-as-predicted",
            oom_kills=sum(d.reason == "OOMKilled" for d in deaths),
            deaths=len(deaths),
            worker_kills=len(observed.worker_kills),
            restarts=sum(observed.restarts.values()),
            back_off_seconds=",".join(f"{s:g}" for s in back_offs) or "none",
            alerts_fired=f"{sum(r.fired_at is not None for r in records)}/{len(records)}",
            seconds=round(seconds, 1),
            failed="; ".join(f"{c.name} ({c.detail})" for c in failed) or None,
        )
    )
    if args.junit:
        write_junit(args.junit, checks, seconds)
    return EXIT_AS_PREDICTED if ok else EXIT_NOT_AS_PREDICTED


def _evidence_complete(prediction: Prediction, observed: Observed, wanted_kills: int) -> bool:
    if prediction.replicas == 0 or not prediction.kills:
        return False  # nothing to wait for: the whole window is the evidence
    if prediction.supervised:
        return bool(observed.worker_kills)
    oom = sum(d.reason == "OOMKilled" for d in observed.deaths.values())
    return oom >= wanted_kills and (wanted_kills == 1 or bool(observed.back_offs))


def _alert_line(record: prom.AlertRecord, observed: Observed, *, summary: bool = False) -> str:
    latency = record.latency(observed.first_kill_at())
    if record.resolved_at is not None:
        resolved: object = "true"
    elif observed.gone and record.fired_at is not None:
        resolved = "false"
    else:
        resolved = "n/a"  # nothing was scaled down or destroyed in the window
    return logfmt.line(
        event="alert_summary" if summary else "alert",
        name=record.name,
        expected="fires" if record.expected else "quiet",
        fired=record.fired_at is not None,
        latency_seconds=None if latency is None else round(latency, 1),
        resolved=resolved,
        resolved_after_gone_seconds=(
            round(record.resolved_at - observed.gone_at, 1)
            if record.resolved_at is not None and observed.gone_at is not None
            else None
        ),
    )


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        return run(args, out, err)
    except BadArguments as error:
        print(f"verify: {error}", file=err)
        return EXIT_BAD_ARGUMENTS
    except Unreachable as error:
        print(f"verify: {error}", file=err)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("verify: interrupted", file=err)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
