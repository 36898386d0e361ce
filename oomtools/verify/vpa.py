"""What VPA's answer to the hog's OOM kill should be, and the verdict on what it was (`verify --vpa`): pure arithmetic
on the stack's settings and on what the watch saw, no cluster.

VPA's recommender records an OOM kill as a memory sample above the killed container's request (its documented bump:
the larger of request + 100 MiB and request x 1.2, the flags --oom-min-bump-up-bytes and --oom-bump-up-ratio), and its
target, the peak of its samples with a margin, can only be above that sample, capped by the VPA's maxAllowed. The
updater then applies it, in place (InPlaceOrRecreate) or by evicting the pod for the admission controller to size its
replacement (Auto, Recreate). A hog with a ceiling holds once its limit leaves room for the ceiling and its
interpreter; one VPA may not give that much is killed again and again: a loop VPA cannot end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from oomtools.verdict import Item, check, rollup
from workload.kinds import ProcessModel

OOM_MIN_BUMP_MIB: Final = 100  # VPA's --oom-min-bump-up-bytes default (100 MiB)
OOM_BUMP_RATIO: Final = 1.2  # its --oom-bump-up-ratio default
HELD: Final = "held"  # the hog holds at its ceiling under a limit VPA gave it
LOOPING: Final = "looping"  # killed again and again: VPA's maximum leaves it no room to hold


def oom_bump_mib(request_mib: int) -> int:
    """The memory sample VPA records for an OOM kill of a container with this request, in MiB (rounded down)."""
    return max(request_mib + OOM_MIN_BUMP_MIB, int(request_mib * OOM_BUMP_RATIO))


@dataclass(frozen=True)
class VpaPrediction:
    mode: str  # the VPA's updateMode
    limit_mib: int  # the limit (and request) the stack declares: the first kill's
    ceiling_mib: int  # what the hog allocates at most
    need_mib: int  # the least limit it holds under: its ceiling and its interpreters' baseline
    max_mib: int | None  # the VPA's maxAllowed (None: none)
    outcome: str  # HELD or LOOPING
    why: str

    @property
    def bump_mib(self) -> int:
        """The least target VPA's answer to the first kill may have: its OOM bump, within its maximum."""
        bump = oom_bump_mib(self.limit_mib)
        return bump if self.max_mib is None else min(bump, self.max_mib)


class NothingToAnswer(ValueError):
    """The stack's settings give VPA no kill to answer: one line says why."""


def predict_vpa(mode: str, limit_mib: int, ceiling_mib: int, max_mib: int | None, model: ProcessModel) -> VpaPrediction:
    """What VPA's answer to the hog's kills should come to; NothingToAnswer where no kill comes, or no ceiling could
    ever let it hold (it grows until killed at any limit)."""
    if not ceiling_mib:
        raise NothingToAnswer(
            "the hog has no ceiling (memoryCeilingMb): it grows until killed at any limit, so VPA has no answer to "
            "judge; set a ceiling above the limit (pulumi config set memoryCeilingMb ...)"
        )
    need = ceiling_mib + model.baseline_max_mib
    if model.room_mib(limit_mib) >= ceiling_mib:
        raise NothingToAnswer(
            f"the hog holds at its ceiling ({ceiling_mib} MiB) under its own limit ({limit_mib} MiB): no kill for VPA "
            "to answer; set memoryCeilingMb above the limit"
        )
    if max_mib is not None and max_mib < need:
        why = f"VPA may give at most {max_mib} MiB (maxAllowed), and the hog needs {need} to hold"
        return VpaPrediction(mode, limit_mib, ceiling_mib, need, max_mib, LOOPING, why)
    why = f"VPA's bump after a kill ({oom_bump_mib(limit_mib)} MiB, again after each) reaches the {need} it needs"
    return VpaPrediction(mode, limit_mib, ceiling_mib, need, max_mib, HELD, why)


@dataclass(frozen=True)
class VpaSeen:
    """What the watch saw, in seconds from its start (None: never)."""

    kills: int  # OOM kills seen (of containers under the declared limit or after)
    first_kill_s: float | None
    recommendation_before_mib: int | None  # the target at the watch's start (None: no recommendation yet)
    recommendation_after_mib: int | None  # the first target after the first kill at or above the bump, else the last
    bumped_s: float | None  # when that target was seen
    applied_how: str | None  # "in-place" (InPlaceResizedByVPA), "evicted" (EvictedByVPA), "new-pod"
    applied_mib: int | None  # the limit a pod ran with after VPA's answer
    applied_s: float | None
    held_s: float | None  # when the hog logged that it holds, under VPA's limit
    kills_after_held: int = 0


def judge_vpa(prediction: VpaPrediction, seen: VpaSeen) -> Item:
    """The verdict on VPA's answer: a kill to answer, a recommendation past its bump, applied to a pod, and the hog
    held (or, predicted looping, did not)."""
    checks = [check("a kill for VPA to answer", seen.kills > 0, f"{seen.kills} OOM kills")]
    after = seen.recommendation_after_mib
    checks.append(
        check(
            "VPA's recommendation past its OOM bump",
            after is not None and after >= prediction.bump_mib and seen.first_kill_s is not None,
            f"{after} MiB, bump {prediction.bump_mib}",
        )
    )
    checks.append(
        check(
            "VPA applied it to the hog",
            seen.applied_mib is not None and after is not None and seen.applied_mib >= after,
            f"{seen.applied_how or 'never'} at {seen.applied_mib} MiB",
        )
    )
    happened = HELD if seen.held_s is not None and seen.kills_after_held == 0 else LOOPING
    detail = f"{happened}, predicted {prediction.outcome}"
    checks.append(check("the hog held as predicted", happened == prediction.outcome, detail))
    return rollup(f"VPA's answer ({prediction.mode})", checks)


def seconds_between(start: float | None, end: float | None) -> float | None:
    """end - start, to a tenth of a second, where both were seen (None otherwise)."""
    if start is None or end is None:
        return None
    return round(end - start, 1)
