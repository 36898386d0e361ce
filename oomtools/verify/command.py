"""verify from end to end: read the stack and what its settings predict, watch it, judge what was seen, report."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from oomtools import alert_client as prom

from oomtools.verify import fleet
from oomtools.verify.arguments import (
    EXIT_AS_PREDICTED,
    EXIT_BAD_ARGUMENTS,
    EXIT_INTERRUPTED,
    EXIT_NOT_AS_PREDICTED,
    EXIT_UNREACHABLE,
    BadArguments,
    Unreachable,
    parse_args,
    prometheus_access,
)
from oomtools.verify.detectors import Coverage, Delivery, collect, kills_of
from oomtools.verify.judge import Check, Prediction, alert_checks, checks_for, coverage_checks, predict
from oomtools.verify.observe import (
    Observed,
    _call,
    check_alertmanager,
    check_prometheus,
    hog_starts,
    kube_api,
    list_nodes,
    poll_alertmanager,
    read_workload,
    replicas_of,
    stack_outputs,
    watch,
)
from oomtools.verify.report import _alert_line, coverage_line, coverage_table, verdict_line, watch_line, write_junit


def run(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], float] = time.time) -> int:
    from oomtools import alert_client as prom

    access = prometheus_access(args)
    outputs = stack_outputs(args.stack, args.outputs)
    namespace, name = str(outputs["namespace"]), str(outputs["workloadName"])
    kind = str(outputs.get("workloadKind", "Deployment"))
    core, apps = kube_api(args.kubeconfig, args.context)
    workload = read_workload(apps, kind, namespace, name)
    if workload is None:
        raise BadArguments(f"no {kind.lower()} {namespace}/{name} on this kube context: deploy it (make up)")
    selector = ",".join(f"{k}={v}" for k, v in sorted(workload.spec.selector.match_labels.items()))
    container = workload.spec.template.spec.containers[0]
    env = {e.name: e.value or "" for e in container.env or []}
    prediction = predict(outputs, replicas_of(workload, kind), env)
    fleet_scope = None
    if kind == "DaemonSet":
        pod_spec = core.api_client.sanitize_for_serialization(workload.spec.template.spec)
        fleet_scope = fleet.FleetScope(list_nodes(core), pod_spec, prediction, args.kills)

    names = tuple(args.alert) or (prom.DEFAULT_ALERTS if args.prometheus else ())
    expected = prediction.alerts_expected()
    records = [prom.AlertRecord(alert, expected=bool(args.alert) or expected[alert]) for alert in names]
    if args.prometheus:
        check_prometheus(args.prometheus, access, names, err)
    delivery = None
    if args.alertmanager:
        check_alertmanager(args.alertmanager, err)
        delivery = Delivery()

    print(watch_line(namespace, selector, prediction, names), file=out, flush=True)
    started = clock()

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    observed = watch(
        core,
        apps,
        namespace,
        name,
        selector,
        prediction,
        records,
        args,
        access,
        say=say,
        err=err,
        clock=clock,
        started=started,
        delivery=delivery,
        kind=kind,
        complete=fleet_scope.complete if fleet_scope else None,
    )
    coverages = read_coverage(core, namespace, observed, args, access, names, prediction, delivery, say, clock)
    seconds = clock() - started
    if fleet_scope is None:
        checks = checks_for(prediction, observed, args.kills, records)
    else:  # a check per node, then the alerts'
        verdicts = fleet_scope.judge(observed, hog_starts(core, namespace, observed))
        for verdict in verdicts:
            say(verdict.line())
        for row in fleet.table(verdicts):
            print(f"verify: {row}", file=err)
        checks = [Check(f"node {v.node}", v.ok, f"{v.verdict}: {v.happened}") for v in verdicts]
        checks += alert_checks(records)
    checks += coverage_checks(coverages, expected)
    for record in records:
        say(_alert_line(record, observed, summary=True))
    for coverage in coverages:
        say(coverage_line(coverage))
    for row in coverage_table(coverages):
        print(f"verify: {row}", file=err)
    say(verdict_line(checks, observed, records, seconds, nodes=None if fleet_scope is None else len(verdicts)))
    if args.junit:
        write_junit(args.junit, checks, seconds)
    return EXIT_AS_PREDICTED if all(check.ok for check in checks) else EXIT_NOT_AS_PREDICTED


def read_coverage(
    core: Any,
    namespace: str,
    observed: Observed,
    args: argparse.Namespace,
    access: prom.Access,
    names: tuple[str, ...],
    prediction: Prediction,
    delivery: Delivery | None,
    say: Callable[[str], None],
    clock: Callable[[], float],
) -> list[Coverage]:
    """Which signals saw each kill observed: the namespace's events always, Prometheus' series and alerts with
    --prometheus, Alertmanager with --alertmanager (read until they show the last kills, or --detector-grace)."""
    from kubernetes.client.exceptions import ApiException

    from oomtools import alert_client as prom

    def events() -> list[Any] | None:
        try:
            return list(_call(core.list_namespaced_event, namespace).items)
        except ApiException:
            return None  # no right to read events: the detector is not read

    def samples(selector: str, since: float, until: float) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        try:
            return prom.samples(args.prometheus, selector, since, until, access)
        except prom.PrometheusUnreachable as error:
            raise Unreachable(f"Prometheus stopped answering: {error}") from error

    def poll(now: float) -> None:
        if delivery is not None:
            poll_alertmanager(args.alertmanager, namespace, delivery, now, say)

    return collect(
        kills_of(observed, prediction.restarts_into_full_pod),
        namespace,
        events=events,
        samples=samples if args.prometheus else None,
        alerts=names,
        alerts_expected=prediction.alerts_expected(),
        delivery=delivery,
        poll_alertmanager=poll,
        grace=args.detector_grace,
        clock=clock,
        sleep=time.sleep,
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
