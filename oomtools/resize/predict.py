"""What a memory limit changed in place on the running hog will do, and the verdict on what the kubelet did: pure
arithmetic on what the hog last logged, no cluster.

The kubelet (1.34 and later) checks a decrease before it applies it: where the pod's memory usage, or the
container's, is at or above the new limit, it refuses the resize (the pod's condition `PodResizeInProgress`, reason
`Error`, `cannot decrease memory limits: ...`) and tries again at each sync. Otherwise it writes the new limit to
the container's cgroup and the pod's, and a hog that goes on growing meets it as it would have met the old one.

The kubelet reads usage from its stats (cAdvisor's, on cgroup v1 `memory.usage_in_bytes`), which the hog's own
`cgroup_usage_mib` matches to the MiB below; the pod's usage counts the sandbox (the pause process) as well, which
the hog cannot see. So the outcome is certain only outside a band of that width above the hog's charge, and a hog
that is still growing may take steps before the kubelet acts: a limit its steps may reach within APPLY_MARGIN_MS is
a race between the two, and the prediction names both outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from oomtools.verdict import Item, check, rollup
from workload.kinds import BASELINE_MAX_MIB
from workload.memory import MIB
from workload.predict import POD_SANDBOX_MAX_BYTES, KillRange, predict_kill

REFUSED: Final = "refused"  # the kubelet's check: usage at or above the new limit
HELD: Final = "held"  # applied, and the hog runs on under it
KILLED: Final = "killed"  # applied, and the hog grew past it: OOMKilled
OUTCOMES: Final = (REFUSED, HELD, KILLED)

# What the kubelet may count beyond the hog's logged charge: the sandbox in the pod's usage, and the MiB the log
# rounds down.
UNSEEN_MIB: Final = POD_SANDBOX_MAX_BYTES // MIB + 1
# And in a pod whose container has restarted: what its earlier runs left charged to the pod (on cgroup v1 a removed
# cgroup's charge, the interpreter's files in the page cache, moves to its parent), which the new run does not see:
# up to the interpreter's whole baseline. Measured in a CI run: the kubelet's figure for a restarted pod 13.5 MiB
# above the hog's own.
EARLIER_RUNS_MIB: Final = BASELINE_MAX_MIB
# How long the kubelet may take to apply a resize: measured on make e2e's node, half a second when it was idle, and
# more than two seconds once under load (a hog whose steps reached the new limit 2 s after the patch was killed by
# the old one). A growing hog whose steps reach the new limit within this is a race.
APPLY_MARGIN_MS: Final = 5000


@dataclass(frozen=True)
class HogState:
    """The running hog as its log last told it: its start line's settings and figures, and its last line."""

    limit_mib: int  # the limit in force (the pod's spec: what a resize changes)
    usage_mib: int  # what its cgroup was charged at its last line (step or holding), to the MiB below
    step: int  # its last step (0: none yet)
    holding: bool  # it reached its ceiling and grows no more
    increment_mib: int
    interval_ms: int
    ceiling_mib: int | None  # what it allocates at most (the start line's ceiling_mib)
    charged_mib: int  # what its cgroup was charged before its first step
    reclaimable_mib: int  # the part of that the kernel can take back
    restarted: bool = False  # its container has run before in this pod (restartCount > 0)
    # The swap its cgroup may use (the start line's swap_max_mib): a Burstable pod's under the kubelet's LimitedSwap,
    # sized by its request, which a resize keeps: the kernel swaps that much out before it kills at the new limit.
    swap_mib: int = 0

    @property
    def unseen_mib(self) -> int:
        """What the kubelet's figure for the pod may hold above the hog's logged charge."""
        return UNSEEN_MIB + (EARLIER_RUNS_MIB if self.restarted else 0)


@dataclass(frozen=True)
class ResizePrediction:
    """The outcomes a resize to `to_mib` may have (one, or two where a race decides), why, and where `killed` is
    among them, the steps the kill comes in."""

    to_mib: int
    outcomes: tuple[str, ...]
    why: str
    kill: KillRange | None = None

    @property
    def certain(self) -> bool:
        return len(self.outcomes) == 1


def predict_resize(hog: HogState, to_mib: int) -> ResizePrediction:
    """What a resize of the hog's memory limit (and a Guaranteed pod's request with it) to `to_mib` MiB will do."""
    if to_mib <= hog.usage_mib:
        return ResizePrediction(to_mib, (REFUSED,), f"the container is charged {hog.usage_mib} MiB, at or above it")
    # The pod's usage may be at or above it: the sandbox, the rounding, and in a restarted pod its earlier runs.
    within = to_mib <= hog.usage_mib + hog.unseen_mib
    if hog.holding:
        if within:
            return ResizePrediction(
                to_mib,
                (REFUSED, HELD),
                f"within {hog.unseen_mib} MiB of the charge the hog holds at ({hog.usage_mib} MiB)",
            )
        return ResizePrediction(to_mib, (HELD,), f"above the charge the hog holds at ({hog.usage_mib} MiB)")
    kill = predict_kill(
        to_mib * MIB,
        hog.charged_mib * MIB,
        hog.increment_mib,
        hog.interval_ms,
        hog.ceiling_mib,
        swap_bytes=hog.swap_mib * MIB,
        reclaimable_bytes=hog.reclaimable_mib * MIB,
        unseen_bytes=POD_SANDBOX_MAX_BYTES,
    )
    if kill is None:  # its ceiling fits under the new limit: it stops growing first
        if within:
            return ResizePrediction(
                to_mib, (REFUSED, HELD), f"within {hog.unseen_mib} MiB of its charge ({hog.usage_mib} MiB)"
            )
        return ResizePrediction(to_mib, (HELD,), f"its ceiling ({hog.ceiling_mib} MiB allocated) fits under it")
    margin_steps = -(-APPLY_MARGIN_MS // max(hog.interval_ms, 1))  # the steps it takes in that time, rounded up
    if within or kill.earliest <= hog.step + margin_steps:
        return ResizePrediction(
            to_mib,
            (REFUSED, KILLED),
            f"its steps may reach it (step {kill.earliest}) within {APPLY_MARGIN_MS // 1000} s, before the kubelet "
            "applies it",
            kill,
        )
    return ResizePrediction(to_mib, (KILLED,), f"it grows past it in step {kill.earliest}..{kill.latest}", kill)


@dataclass(frozen=True)
class Outcome:
    """What the kubelet did with the resize, as the pod showed it: `what` is one of OUTCOMES, or None where the
    watch ended with none of them (`detail` says what the pod showed last)."""

    what: str | None
    seconds: float  # from the patch to the outcome
    detail: str = ""  # the condition's message (refused), the limit seen applied, what the pod showed last
    applied_mib: int | None = None  # the limit the container's status showed after the resize
    kill_step: int | None = None  # the step the kill came in (one past the hog's last step line)
    reason: str = ""  # the killed container's (OOMKilled)
    exit_code: int | None = None


def judge(prediction: ResizePrediction, outcome: Outcome) -> Item:
    """The verdict on a resize: the outcome among those predicted, and for a kill, the kubelet's report of it
    (OOMKilled, exit code 137) in the steps predicted, under the limit the resize applied."""
    happened = outcome.what or "none"
    checks = [
        check(
            "the outcome predicted",
            outcome.what in prediction.outcomes,
            f"{happened}, predicted {'|'.join(prediction.outcomes)}"
            + ("" if outcome.what else f" ({outcome.detail or 'the pod showed none'})"),
        )
    ]
    if outcome.what in (HELD, KILLED):
        checks.append(
            check(
                "the new limit applied",
                outcome.applied_mib == prediction.to_mib,
                f"{outcome.applied_mib} MiB in the container's status, {prediction.to_mib} asked",
            )
        )
    if outcome.what == KILLED:
        checks.append(
            check(
                "killed by the kernel",
                outcome.reason == "OOMKilled" and outcome.exit_code == 137,  # 128 + SIGKILL
                f"{outcome.reason} {outcome.exit_code}",
            )
        )
        if prediction.kill is not None and outcome.kill_step is not None:
            checks.append(
                check(
                    "the kill in a step predicted",
                    prediction.kill.holds(outcome.kill_step),
                    f"step {outcome.kill_step}, predicted {prediction.kill.earliest}..{prediction.kill.latest}",
                )
            )
        else:
            checks.append(check("the kill in a step predicted", False, "no step to hold the kill to"))
    return rollup(f"resize to {prediction.to_mib} MiB", checks)
