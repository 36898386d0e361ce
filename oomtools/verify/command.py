"""verify from end to end: read the stack and what its settings predict, watch it, detect, judge, report."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from oomtools import alert_catalogue
from oomtools.verdict import NOTHING_CHECKED, PASSED
from oomtools.verify import detectors, fleet, judge, report, report_page, results
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
from oomtools.verify.detectors import collect
from oomtools.verify.observe import (
    AlertState,
    Delivery,
    Event,
    KubeEvent,
    Observed,
    Seen,
    Target,
    WatchOptions,
    check_alertmanager,
    check_prometheus,
    hog_starts,
    kube_api,
    list_nodes,
    poll_alertmanager,
    read_events,
    read_nodes,
    read_samples,
    read_workload,
    replicas_of,
    stack_outputs,
    until_answers,
    watch,
)
from oomtools.verify.prediction import Prediction, predict


def run(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], float] = time.time) -> int:
    """Gather (watch the stack, or read --from's saved results), then judge and report what was gathered."""
    if args.vpa:
        from oomtools.verify.vpa_watch import run_vpa

        return run_vpa(args, out, err)
    terminal = report.Terminal(out, err)
    if args.from_results is not None:
        gathered = results.load(args.from_results)
        terminal.note(report.from_line(args.from_results, gathered.namespace, gathered.started))
        terminal.say(
            report.watch_line(gathered.namespace, gathered.selector, gathered.prediction, gathered.alert_names)
        )
        for seen in gathered.seen:
            terminal.seen(seen)
    else:
        gathered = gather(args, terminal, clock)
        if args.save:
            results.save(args.save, gathered)
    return judge_and_report(args, gathered, terminal)


def gather(args: argparse.Namespace, terminal: report.Terminal, clock: Callable[[], float]) -> results.Gathered:
    """Watch the deployed stack and read what the detectors read: everything observed, nothing judged."""
    from oomtools import alert_client as prom

    access = prometheus_access(args)
    outputs = stack_outputs(args.stack, args.outputs)
    namespace, name = str(outputs["namespace"]), str(outputs["workloadName"])
    kind = str(outputs.get("workloadKind", "Deployment"))
    core, apps = kube_api(args.kubeconfig, args.context)
    workload = until_answers(lambda: read_workload(apps, kind, namespace, name), args.timeout, terminal.note)
    if workload is None:
        raise BadArguments(f"no {kind.lower()} {namespace}/{name} on this kube context: deploy it (make up)")
    selector = ",".join(f"{k}={v}" for k, v in sorted(workload.spec.selector.match_labels.items()))
    container = workload.spec.template.spec.containers[0]
    env = {e.name: e.value or "" for e in container.env or []}
    replicas = replicas_of(workload, kind)
    prediction = predict(outputs, replicas, env)
    fleet_scope = None
    pod_spec = None
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
    said: list[Event | AlertState] = []

    def seen(thing: Event | AlertState) -> None:
        if not (isinstance(thing, Event) and thing.name in report.PROGRESS):
            said.append(thing)
        terminal.seen(thing)

    started = clock()
    keep = bool(args.report or args.save)  # the logs and the cluster's memory series: what the report draws
    options = WatchOptions(args.timeout, args.wait_resolved, args.prometheus, access, args.alertmanager, keep)
    observed = watch(
        Target(core, apps, namespace, name, kind, selector),
        prediction,
        records,
        options,
        complete=fleet_scope.complete
        if fleet_scope
        else functools.partial(judge.evidence_complete, prediction, args.kills),
        seen=seen,
        clock=clock,
        started=started,
        delivery=delivery,
        # the alerts asked for by name must fire; the rest as each pod's start line predicts its kill
        expect=None if args.alert else functools.partial(judge.alerts_expected, prediction),
    )
    samples = None
    if options.prometheus and options.access is not None:
        samples = results.SampleStore()
    read = read_coverage(
        core, namespace, observed, options, args.detector_grace, names, prediction, delivery, seen, samples, clock
    )
    seconds = clock() - started
    if samples is not None and keep:
        samples.recording(read_samples(args.prometheus, access))(
            report_page.working_set_selector(namespace), started, read.until
        )
    if fleet_scope is not None:
        nodes, starts = fleet_scope.nodes, hog_starts(core, namespace, observed)
    else:
        nodes, starts = (read_nodes(core, observed.pod_nodes.values()) if keep else []), {}
    return results.Gathered(
        outputs=outputs,
        kind=kind,
        namespace=namespace,
        selector=selector,
        env=env,
        replicas=replicas,
        wanted_kills=args.kills,
        alert_names=names,
        prometheus=args.prometheus,
        alertmanager=args.alertmanager,
        started=started,
        seconds=seconds,
        coverage_until=read.until,
        observed=observed,
        alerts=records,
        delivery=delivery,
        kube_events=read.events,
        samples=samples,
        nodes=nodes,
        pod_spec=pod_spec,
        starts=starts,
        seen=said,
    )


def judge_and_report(args: argparse.Namespace, gathered: results.Gathered, terminal: report.Terminal) -> int:
    """Detect, judge and report from what was gathered alone: a live run and --from take this same way."""
    prediction, observed, records = gathered.prediction, gathered.observed, gathered.alerts
    coverages = detectors.read(
        judge.observed_kills(prediction, observed),
        gathered.namespace,
        gathered.coverage_until,
        events=gathered.kube_events,
        samples=gathered.samples,
        alerts=gathered.alert_names,
        delivery=gathered.delivery,
    )
    expected = judge.alerts_expected(prediction, observed)
    verdicts = None
    if gathered.pod_spec is None:
        checks = judge.checks_for(prediction, observed, gathered.wanted_kills, records)
    else:  # a check per node, then the alerts'
        scope = fleet.FleetScope(gathered.nodes, gathered.pod_spec, prediction, gathered.wanted_kills)
        verdicts = scope.judge(observed, gathered.starts)
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
    nodes = None if verdicts is None else len(verdicts)
    ends = {part.supervised_end for part, _ in judge.resolved(prediction, observed)}
    supervised_end = ",".join(sorted(end for end in ends if end is not None)) or None
    swap_mib = judge.swap_read(prediction, observed)
    line = report.verdict_line(
        tree, observed, records, gathered.seconds, nodes=nodes, supervised_end=supervised_end, swap_mib=swap_mib
    )
    terminal.say(line)
    if args.junit:
        report.write_junit(args.junit, tree, gathered.seconds)
    if args.report:
        report_page.write(args.report, report_page.page(gathered, tree, coverages, verdicts, line))
    return {PASSED: EXIT_AS_PREDICTED, NOTHING_CHECKED: EXIT_NOTHING_CHECKED}.get(tree.status, EXIT_NOT_AS_PREDICTED)


@dataclass(frozen=True)
class CoverageRead:
    """What the detectors' last reading read: when, and the namespace's events then (None: not listable)."""

    until: float
    events: list[KubeEvent] | None


def read_coverage(
    core: object,
    namespace: str,
    observed: Observed,
    options: WatchOptions,
    grace: float,
    names: tuple[str, ...],
    prediction: Prediction,
    delivery: Delivery | None,
    seen: Seen,
    store: results.SampleStore | None,
    clock: Callable[[], float],
) -> CoverageRead:
    """Read what shows each kill observed, until it shows the last kills (or --detector-grace): the namespace's
    events always, Prometheus' series and alerts with --prometheus (each answer kept in `store`), Alertmanager with
    --alertmanager. The detectors judge from what the last reading read (judge_and_report)."""
    last: dict[str, Any] = {"until": clock(), "events": None}

    def poll(now: float) -> None:
        if delivery is not None and options.alertmanager:
            poll_alertmanager(options.alertmanager, namespace, delivery, now, seen)

    def timed() -> float:
        last["until"] = clock()
        return float(last["until"])

    def events() -> list[KubeEvent] | None:
        last["events"] = read_events(core, namespace)
        return last["events"]  # type: ignore[no-any-return]

    samples = None
    if options.prometheus and options.access is not None and store is not None:
        samples = store.recording(read_samples(options.prometheus, options.access))
    collect(
        judge.observed_kills(prediction, observed),
        namespace,
        events=events,
        samples=samples,
        alerts=names,
        alerts_expected=judge.alerts_expected(prediction, observed),
        delivery=delivery,
        poll_alertmanager=poll,
        grace=grace,
        clock=timed,
        sleep=time.sleep,
    )
    return CoverageRead(float(last["until"]), last["events"])


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
