"""The checks that hold what was observed to what the stack's settings predict: the items of verify's result tree.

Each check is an item (oomtools/verdict.py) with a status and its details, and where it judges kills, an item per
kill beneath it; fleet.py adds an item per node, the detectors' checks an item per signal. report.py writes the
terminal's verdict and the JUnit report from the same items.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oomtools import alert_catalogue
from oomtools.verdict import NOTHING_CHECKED, Item, check, over, rollup, stepped
from oomtools.verify import prediction as predicted
from oomtools.verify.detectors import NO_SIGNAL_OF_ITS_OWN, UNREAD, YES, Coverage, Kill, expected_kinds, kills_of
from oomtools.verify.prediction import OOM_EXIT_CODE, Prediction

if TYPE_CHECKING:  # annotations only: Prometheus' client is imported where used
    from oomtools import alert_client as prom
    from oomtools.verify.observe import Death, Observed


def _kill(death: Death, ok: bool, detail: str) -> Item:
    stamp = death.finished_at.strftime("%H:%M:%S")
    return check(f"{death.pod}/{death.container}@{stamp}", ok, detail)


def checks_for(
    prediction: Prediction, observed: Observed, wanted_kills: int, alert_records: list[prom.AlertRecord]
) -> list[Item]:
    """The checks of one pod's (or one node's pods') run, then the alerts'."""
    checks: list[Item] = []
    deaths = sorted(observed.deaths.values(), key=lambda d: d.finished_at)
    if prediction.replicas == 0:
        checks.append(check("no pod runs (replicas=0)", not observed.pods_seen, f"pods={len(observed.pods_seen)}"))
    elif not prediction.kills:
        checks.append(
            check(
                "no container dies (a ceiling holds it)",
                not deaths and bool(observed.running),
                f"deaths={len(deaths)} running={len(observed.running)}",
            )
        )
    else:
        parts = resolved(prediction, observed)
        # Pods whose start lines differ: an item for each part's pods, their checks beneath it.
        checks = (
            _judged(*parts[0], wanted_kills)
            if len(parts) == 1
            else [_pods_item(part_prediction, part, wanted_kills) for part_prediction, part in parts]
        )
    return checks + alert_checks(alert_records)


def _judged(prediction: Prediction, observed: Observed, wanted_kills: int) -> list[Item]:
    """The checks of pods judged by one prediction: a supervised container's by its start line, else its kills'."""
    if prediction.supervised:
        return _supervised(prediction, observed, wanted_kills)
    deaths = sorted(observed.deaths.values(), key=lambda d: d.finished_at)
    return _container_kills(prediction, observed, deaths, wanted_kills)


def _pods(observed: Observed) -> set[str]:
    """The pods seen (every death and worker kill is of one), and those a start line was kept of."""
    return observed.pods_seen | set(observed.starts)


def oom_groups(observed: Observed) -> str:
    """The memory.oom.group values the pods' start lines gave (NO_OOM_GROUP for a line without one), comma-separated."""
    return ",".join(sorted({start.get("oom_group", predicted.NO_OOM_GROUP) for start in observed.starts.values()}))


def resolved(prediction: Prediction, observed: Observed) -> list[tuple[Prediction, Observed]]:
    """The prediction each of the pods is judged by, with what was observed of them: each pod's follows its hog's
    start line (Prediction.read_from: a supervised one's end, and the swap its cgroup may use). Where every line
    read gives the same (the end, and the swap), all the pods are judged by it (one whose line was not read runs the
    same settings); where they differ (pods on nodes of different kinds, or with different swap), each one's pods
    apart, and those not read apart, by the settings alone (a supervised one's end UNREAD); where no line was read,
    all are judged by the settings alone."""
    by_read: dict[tuple[str | None, int | None], list[str]] = {}
    unread: list[str] = []
    for pod in sorted(_pods(observed)):
        start = observed.starts.get(pod)
        if start is None:
            unread.append(pod)
            continue
        read = prediction.read_from(start)
        by_read.setdefault((read.supervised_end, read.swap_mib), []).append(pod)
    if len(by_read) < 2:
        read_pods = [pods[0] for pods in by_read.values()]
        return [(prediction.read_from(observed.starts[read_pods[0]] if read_pods else None), observed)]
    parts = sorted([*by_read.values(), *([unread] if unread else [])])
    return [(prediction.read_from(observed.starts.get(pods[0])), observed.in_pods(set(pods))) for pods in parts]


def pod_predictions(prediction: Prediction, observed: Observed) -> dict[str, Prediction]:
    """Each pod seen, and the prediction it is judged by (resolved)."""
    return {pod: part_prediction for part_prediction, part in resolved(prediction, observed) for pod in _pods(part)}


def swap_read(prediction: Prediction, observed: Observed) -> str | None:
    """The swap, in MiB, the pods were judged by where a start line said any (comma-separated: `0,64` where pods on
    a node without swap and on one with 64 MiB were judged apart); None where none did."""
    swaps = {part.swap_mib for part, _ in resolved(prediction, observed) if part.swap_mib is not None}
    return ",".join(str(mib) for mib in sorted(swaps)) if any(swaps) else None


def _pods_item(prediction: Prediction, observed: Observed, wanted_kills: int) -> Item:
    items = _judged(prediction, observed, wanted_kills)
    failed = "".join(f"; {c.name} ({c.detail})" for c in items if not c.ok)
    pods = ",".join(sorted(_pods(observed)))
    return over(f"pods {pods}", items, f"{_read_as(prediction)}{failed}")


def _read_as(prediction: Prediction) -> str:
    """What a part's pods were judged by: a supervised one's end, and the swap (`unread`: no start line read)."""
    swap = "unread" if prediction.swap_mib is None else str(prediction.swap_mib)
    if not prediction.supervised:
        return f"swap_mib={swap}"
    return f"supervised_end={prediction.supervised_end}" + (f" swap_mib={swap}" if prediction.swap_mib else "")


def _supervised(prediction: Prediction, observed: Observed, wanted_kills: int) -> list[Item]:
    """A supervised container's checks, by its start line: a group kill's are a single process's, a worker
    kill's that the worker died and the container lived on; with no start line read, none holds."""
    end = prediction.supervised_end
    deaths = sorted(observed.deaths.values(), key=lambda d: d.finished_at)
    kills = len(observed.worker_kills)
    said = f" supervised_end={end} oom_group={oom_groups(observed)}"
    if end == predicted.GROUP_KILL:
        checks = _container_kills(prediction, observed, deaths, wanted_kills)
        checks[0].detail += said
        checks.insert(1, check("no worker killed alone (one OOM kills the group)", not kills, f"worker_kills={kills}"))
        return checks
    if end == predicted.WORKER_KILL:
        restarts = sum(observed.restarts.values())
        return [
            check("the kernel kills the worker", kills >= 1, f"worker_kills={kills}{said}"),
            check("the container lives on", not deaths and restarts == 0, f"deaths={len(deaths)} restarts={restarts}"),
        ]
    oom = sum(d.reason == "OOMKilled" for d in deaths)
    return [
        check(
            "a kill came (the worker's, or the container's)",
            bool(kills or oom),
            f"worker_kills={kills} oom_kills={oom}",
        ),
        Item(
            "the hog's start line says how a kill ends",
            NOTHING_CHECKED,
            f"supervised_end={end}: no start line read (supervisor_start or start), so whether the container lives "
            "on (oom_group=0, or cgroup v1) or dies with its worker (oom_group=1) is not known",
        ),
    ]


def _container_kills(prediction: Prediction, observed: Observed, deaths: list[Death], wanted_kills: int) -> list[Item]:
    checks: list[Item] = []
    oom = [d for d in deaths if d.reason == "OOMKilled" and d.exit_code == OOM_EXIT_CODE]
    others = [d for d in deaths if d not in oom]
    swap = f" swap_mib={prediction.swap_mib}" if prediction.swap_mib else ""
    checks.append(
        check(
            f"{wanted_kills} OOM kills (OOMKilled, exit code 137)",
            len(oom) >= wanted_kills,
            f"oom_kills={len(oom)}{swap}",
        )
    )
    checks.append(
        check(
            "no other death",
            not others,
            " ".join(f"{d.reason}/{d.exit_code}" for d in others) or "none",
            (_kill(d, False, f"{d.reason}/{d.exit_code}") for d in others),
        )
    )
    # A tmpfs run's restart starts in a pod its emptyDir still fills: killed before its first step (no step line
    # for a termination message), it is as predicted; the steps and the time hold the runs that got to step, and the
    # pod's first run, which nothing filled before it. Where every kill came at start there is nothing to hold to the
    # steps or the time: those checks checked nothing, and say so.
    at_start = [d for d in oom if prediction.killed_at_start(d.message, d.first_run)]
    stepped = [d for d in oom if d not in at_start]
    at_start_detail = f" killed_at_start={len(at_start)}" if prediction.restarts_into_full_pod else ""
    if oom and not stepped:
        at_start_detail += (
            ": no kill came after a step (the first run's was not seen), nothing to hold to the prediction"
        )
    if prediction.steps is not None:
        steps = prediction.steps
        detail = (
            f"predicted_steps={steps.earliest}..{steps.latest} seen="
            + ",".join(
                f"{prediction.kill_step(d.message)}({steps.where(prediction.kill_step(d.message))})" for d in stepped
            )
            + at_start_detail
        )
        kills = [
            _kill(d, prediction.in_announced_steps(d.message), f"step {prediction.kill_step(d.message)}")
            for d in stepped
        ]
        name = "each kill in an announced step"
        checks.append(over(name, kills, detail) if oom else check(name, False, detail))
    detail = (
        f"predicted={prediction.earliest:g}..{prediction.latest:g}s seen="
        + ",".join(f"{d.seconds_from_start:g}" for d in stepped)
        + at_start_detail
    )
    timed = [_kill(d, prediction.on_time(d.seconds_from_start), f"{d.seconds_from_start:g}s") for d in stepped]
    checks.append(over("each kill on time", timed, detail) if oom else check("each kill on time", False, detail))
    if wanted_kills > 1:
        checks.append(
            check(
                "a back-off measured between restarts", bool(observed.back_offs), f"back_offs={len(observed.back_offs)}"
            )
        )
    return checks


def alert_checks(alert_records: list[prom.AlertRecord]) -> list[Item]:
    """A check for each alert: fired where the settings predict it, quiet where they do not."""
    checks = []
    for record in alert_records:
        verb = "fires" if record.expected else "stays quiet"
        state = "fired" if record.fired_at is not None else "quiet"
        checks.append(check(f"alert {record.name} {verb}", record.as_predicted, state))
    return checks


def evidence_complete(prediction: Prediction, wanted_kills: int, observed: Observed) -> bool:
    """What the watch waits for is in: the kills asked for (and a back-off between two), or a worker's kill where
    the hog's start line predicts one; a supervised pod whose start line is not read yet waits for it, and so does a
    pod killed after a step (whose hog wrote its start line first): the swap it says moves the steps and the time."""
    if prediction.replicas == 0 or not prediction.kills:
        return False  # nothing to wait for: the whole window is the evidence
    return all(
        _kills_in(part_prediction, part, wanted_kills) for part_prediction, part in resolved(prediction, observed)
    )


def _kills_in(prediction: Prediction, observed: Observed, wanted_kills: int) -> bool:
    end = prediction.supervised_end
    if end == predicted.UNREAD:
        return False  # its start line says which kill to wait for
    if end == predicted.WORKER_KILL:
        return bool(observed.worker_kills)
    oom = [d for d in observed.deaths.values() if d.reason == "OOMKilled"]
    read = all(observed.hog_started(d.pod) for d in oom if stepped(d.message))
    return read and len(oom) >= wanted_kills and (wanted_kills == 1 or bool(observed.back_offs))


def alerts_expected(prediction: Prediction, observed: Observed) -> dict[str, bool]:
    """Which alerts the namespace's kills are expected to fire, each pod's as its start line predicts (resolved):
    an alert fires where any pod's kill is one it is made for."""
    each = [part_prediction.alerts_expected() for part_prediction, _ in resolved(prediction, observed)]
    return {name: any(expected[name] for expected in each) for name in alert_catalogue.NAMES}


def observed_kills(prediction: Prediction, observed: Observed) -> list[Kill]:
    """Every OOM kill observed (detectors.kills_of), a tmpfs restart's at start where its pod's prediction says
    the restart starts in a full pod (a single process, or a supervised one the kernel kills as a group)."""
    kills = [
        kill
        for part_prediction, part in resolved(prediction, observed)
        for kill in kills_of(part, part_prediction.restarts_into_full_pod)
    ]
    return sorted(kills, key=lambda kill: kill.at)


def coverage_checks(coverages: list[Coverage], alerts_expected: dict[str, bool]) -> list[Item]:
    """A check for each detector that was read: it saw every kill of the kinds it is made for (a signal made for
    none, such as the kubelet's events, is reported and passes); and one check that names each kill no monitoring
    signal saw, where any was read beyond the pod's status and the hog's line."""
    checks = []
    for detector in dict.fromkeys(name for coverage in coverages for name in coverage.seen):
        read = [c for c in coverages if c.seen.get(detector, UNREAD) != UNREAD]
        if not read:
            continue
        kinds = expected_kinds(detector, alerts_expected)
        saw = [c for c in read if c.seen[detector] == YES]
        missed = [c for c in read if c.kill.kind in kinds and c.seen[detector] != YES]
        detail = f"saw {len(saw)} of {len(read)} kills"
        if missed:
            detail += "; missed " + ", ".join(c.kill.label for c in missed)
        kills = [check(c.kill.label, c not in missed, c.seen[detector]) for c in read]
        checks.append(check(f"detector {detector}", not missed, detail, kills))
    monitored = [
        c
        for c in coverages
        if any(value != UNREAD for name, value in c.seen.items() if name not in NO_SIGNAL_OF_ITS_OWN)
    ]
    if monitored:
        unseen = [c.kill.label for c in monitored if not c.monitoring_saw()]
        kills = [check(c.kill.label, c.monitoring_saw(), "seen" if c.monitoring_saw() else "unseen") for c in monitored]
        checks.append(
            check(
                "every kill seen by the monitoring",
                not unseen,
                ", ".join(unseen) or f"all {len(monitored)} kills",
                kills,
            )
        )
    return checks


def verdict(checks: list[Item]) -> Item:
    """The run's verdict: every check rolled up into one item."""
    return rollup("oom-killer verify", checks)
