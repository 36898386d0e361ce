"""What the stack's settings predict, and the checks that hold what was observed to it: the verdict's parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from workload import logfmt
from workload.predict import KillRange

if TYPE_CHECKING:  # annotations only: observe imports this module, Prometheus' client is imported where used
    from oomtools import alert_client as prom
    from oomtools.verify.detectors import Coverage
    from oomtools.verify.observe import Death, Observed

OOM_EXIT_CODE: Final = 137
# Kubernetes timestamps are whole seconds, and the container's start includes the interpreter's own (slower under
# a CPU limit than the prediction, which counts the steps only): a kill is on time from a second before the earliest
# prediction to the latest one plus half of it (at least 5 s).
EARLY_SLACK_SECONDS: Final = 1.0
LATE_SLACK_MIN_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Prediction:
    kills: bool  # no ceiling and replicas > 0
    supervised: bool  # PROCESS_MODEL=supervised: the kills are the worker's, the container lives on
    earliest: float | None
    latest: float | None
    replicas: int
    steps: KillRange | None = None  # the steps in which a kill may come (predictedOomKillStep); None: not exported
    # MEMORY_KIND=tmpfs, one process: the emptyDir keeps a killed run's files, charged to the pod, so a restart
    # mostly dies at start (docs/memory-kinds.md)
    restarts_into_full_pod: bool = False

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
    tmpfs = env.get("MEMORY_KIND", "anonymous") == "tmpfs"
    return Prediction(
        predicted is not None and replicas > 0, supervised, earliest, latest, replicas, steps, tmpfs and not supervised
    )


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
        # A tmpfs run's restart starts in a pod its emptyDir still fills: killed before its first step (no step line
        # for a termination message), it is as predicted; the steps and the time hold the runs that got to step.
        at_start = [d for d in oom if prediction.restarts_into_full_pod and not d.message.startswith("event=step")]
        stepped = [d for d in oom if d not in at_start]
        at_start_detail = f" killed_at_start={len(at_start)}" if prediction.restarts_into_full_pod else ""
        if prediction.steps is not None:
            steps = prediction.steps
            checks.append(
                Check(
                    "each kill in an announced step",
                    bool(oom) and all(prediction.in_announced_steps(d) for d in stepped),
                    f"predicted_steps={steps.earliest}..{steps.latest} seen="
                    + ",".join(f"{prediction.kill_step(d)}({steps.where(prediction.kill_step(d))})" for d in stepped)
                    + at_start_detail,
                )
            )
        late = [d for d in stepped if not prediction.on_time(d.seconds_from_start)]
        checks.append(
            Check(
                "each kill on time",
                bool(oom) and not late,
                f"predicted={prediction.earliest:g}..{prediction.latest:g}s seen="
                + ",".join(f"{d.seconds_from_start:g}" for d in stepped)
                + at_start_detail,
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
    return checks + alert_checks(alert_records)


def alert_checks(alert_records: list[prom.AlertRecord]) -> list[Check]:
    """A check for each alert: fired where the settings predict it, quiet where they do not."""
    checks = []
    for record in alert_records:
        verb = "fires" if record.expected else "stays quiet"
        state = "fired" if record.fired_at is not None else "quiet"
        checks.append(Check(f"alert {record.name} {verb}", record.as_predicted, state))
    return checks


def _evidence_complete(prediction: Prediction, observed: Observed, wanted_kills: int) -> bool:
    if prediction.replicas == 0 or not prediction.kills:
        return False  # nothing to wait for: the whole window is the evidence
    if prediction.supervised:
        return bool(observed.worker_kills)
    oom = sum(d.reason == "OOMKilled" for d in observed.deaths.values())
    return oom >= wanted_kills and (wanted_kills == 1 or bool(observed.back_offs))


def coverage_checks(coverages: list[Coverage], alerts_expected: dict[str, bool]) -> list[Check]:
    """A check for each detector that was read: it saw every kill of the kinds it is made for (a signal made for
    none, such as the kubelet's events, is reported and passes); and one check that names each kill no monitoring
    signal saw, where any was read beyond the pod's status and the hog's line."""
    from oomtools.verify.detectors import NO_SIGNAL_OF_ITS_OWN, UNREAD, YES, expected_kinds

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
        checks.append(Check(f"detector {detector}", not missed, detail))
    monitored = [
        c
        for c in coverages
        if any(value != UNREAD for name, value in c.seen.items() if name not in NO_SIGNAL_OF_ITS_OWN)
    ]
    if monitored:
        unseen = [c.kill.label for c in monitored if not c.monitoring_saw()]
        checks.append(
            Check("every kill seen by the monitoring", not unseen, ", ".join(unseen) or f"all {len(monitored)} kills")
        )
    return checks
