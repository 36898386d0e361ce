"""verify from end to end: read the stack and what its settings predict, watch it, detect, judge, report."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from typing import TextIO

from oomtools import alert_catalogue
from oomtools.verdict import NOTHING_CHECKED, PASSED
from oomtools.verify import fleet, judge, report
from oomtools.verify.arguments import (
    EXIT_AS_PREDICTED,
    EXIT_BAD_ARGUMENTS,
    EXIT_INTERRUPTED,
    EXIT_NOT_AS_PREDICTED,
    EXIT_NOTHING_CHECKED,
    EXIT_UNREACHABLE,
    BadArguments,
    Unreachable,
    parse_args,
    prometheus_access,
)
from oomtools.verify.detectors import Coverage, collect, kills_of
from oomtools.verify.observe import (
    AlertState,
    Delivery,
    Observed,
    Target,
    WatchOptions,
    check_alertmanager,
    check_prometheus,
    hog_starts,
    kube_api,
    list_nodes,
    poll_alertmanager,
    read_events,
    read_samples,
    read_workload,
    replicas_of,
    stack_outputs,
    watch,
)
from oomtools.verify.prediction import Prediction, predict


def run(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], float] = time.time) -> int:
    from oomtools import alert_client as prom

    terminal = report.Terminal(out, err)
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

    names = tuple(args.alert) or (alert_catalogue.NAMES if args.prometheus else ())
    expected = prediction.alerts_expected()
    records = [prom.AlertRecord(alert, expected=bool(args.alert) or expected[alert]) for alert in names]
    if args.prometheus:
        for text in report.prometheus_lines(args.prometheus, *check_prometheus(args.prometheus, access, names)):
            terminal.note(text)
    delivery = None
    if args.alertmanager:
        terminal.note(report.alertmanager_line(args.alertmanager, check_alertmanager(args.alertmanager)))
        delivery = Delivery()

    terminal.say(report.watch_line(namespace, selector, prediction, names))
    started = clock()
    options = WatchOptions(args.timeout, args.wait_resolved, args.prometheus, access, args.alertmanager)
    observed = watch(
        Target(core, apps, namespace, name, kind, selector),
        prediction,
        records,
        options,
        complete=fleet_scope.complete
        if fleet_scope
        else functools.partial(judge.evidence_complete, prediction, args.kills),
        seen=terminal.seen,
        clock=clock,
        started=started,
        delivery=delivery,
    )
    coverages = read_coverage(
        core, namespace, observed, options, args.detector_grace, names, prediction, delivery, terminal, clock
    )
    seconds = clock() - started
    nodes = None
    if fleet_scope is None:
        checks = judge.checks_for(prediction, observed, args.kills, records)
    else:  # a check per node, then the alerts'
        verdicts = fleet_scope.judge(observed, hog_starts(core, namespace, observed))
        nodes = len(verdicts)
        for verdict in verdicts:
            terminal.say(report.node_line(verdict))
        terminal.table(report.fleet_table(verdicts))
        checks = [fleet.fleet_item(verdicts), *judge.alert_checks(records)]
    tree = judge.verdict(checks + judge.coverage_checks(coverages, expected))
    for record in records:
        terminal.say(report.alert_line(AlertState.of(record, observed), summary=True))
    for coverage in coverages:
        terminal.say(report.coverage_line(coverage))
    terminal.table(report.coverage_table(coverages))
    terminal.say(report.verdict_line(tree, observed, records, seconds, nodes=nodes))
    if args.junit:
        report.write_junit(args.junit, tree, seconds)
    return {PASSED: EXIT_AS_PREDICTED, NOTHING_CHECKED: EXIT_NOTHING_CHECKED}.get(tree.status, EXIT_NOT_AS_PREDICTED)


def read_coverage(
    core: object,
    namespace: str,
    observed: Observed,
    options: WatchOptions,
    grace: float,
    names: tuple[str, ...],
    prediction: Prediction,
    delivery: Delivery | None,
    terminal: report.Terminal,
    clock: Callable[[], float],
) -> list[Coverage]:
    """Which signals saw each kill observed: the namespace's events always, Prometheus' series and alerts with
    --prometheus, Alertmanager with --alertmanager (read until they show the last kills, or --detector-grace)."""

    def poll(now: float) -> None:
        if delivery is not None and options.alertmanager:
            poll_alertmanager(options.alertmanager, namespace, delivery, now, terminal.seen)

    samples = None
    if options.prometheus and options.access is not None:
        samples = read_samples(options.prometheus, options.access)
    return collect(
        kills_of(observed, prediction.restarts_into_full_pod),
        namespace,
        events=lambda: read_events(core, namespace),
        samples=samples,
        alerts=names,
        alerts_expected=prediction.alerts_expected(),
        delivery=delivery,
        poll_alertmanager=poll,
        grace=grace,
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
