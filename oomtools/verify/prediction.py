"""What a deployed stack's settings predict: the bottom of verify's pipeline, read by each stage above it (observe,
detect, judge, report) and importing none of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from oomtools import alert_catalogue, verdict
from workload import kinds
from workload.predict import KillRange

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
    # mostly dies at start (docs/memory-kinds.md; kinds.restarts_into_full_pod)
    restarts_into_full_pod: bool = False

    def kill_step(self, last_line: str) -> int:
        """The step a container's kill came in, from its termination message (the hog's last step line)."""
        return verdict.kill_step(last_line)

    def in_announced_steps(self, last_line: str) -> bool:
        return self.steps is None or self.steps.holds(self.kill_step(last_line))

    def killed_at_start(self, last_line: str, first_run: bool = False) -> bool:
        return verdict.killed_at_start(self.restarts_into_full_pod, last_line, first_run)

    def on_time(self, seconds: float) -> bool:
        if self.earliest is None or self.latest is None:
            return False
        late = max(LATE_SLACK_MIN_SECONDS, self.latest / 2)
        return self.earliest - EARLY_SLACK_SECONDS <= seconds <= self.latest + late

    def alerts_expected(self) -> dict[str, bool]:
        """Which of the rule file's alerts the settings predict to fire for this namespace."""
        return alert_catalogue.alerts_expected(self.kills, self.supervised)


def predict(outputs: dict[str, Any], replicas: int, env: dict[str, str]) -> Prediction:
    """The prediction from the stack's outputs, the workload's replicas and its container's environment."""
    predicted = outputs.get("predictedSecondsToOomKill") or None
    kind, model = verdict.memory_kind(env), verdict.process_model(env)
    earliest = float(predicted["earliest"]) if predicted else None
    latest = float(predicted["latest"]) if predicted else None
    step = outputs.get("predictedOomKillStep") or None
    steps = None if not step else KillRange(int(step["earliest"]), int(step["latest"]), int(step["latest"]), 0)
    return Prediction(
        predicted is not None and replicas > 0,
        model.container_survives_kill,
        earliest,
        latest,
        replicas,
        steps,
        kinds.restarts_into_full_pod(kind, model),
    )
