"""resize from end to end: find the hog's pod, read where it stands, predict, patch its `resize` subresource as
VPA's updater does, watch what the kubelet does with it, judge and report."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, Final, TextIO

from oomtools.arguments import Parser, UsageError, exit_codes
from oomtools.resize.pod import (
    Reading,
    Target,
    has_restarted,
    hog_state,
    killed_step,
    lines_in,
    read_pod,
    refusal,
    resize_patch,
    running_container_id,
    target_of,
)
from oomtools.resize.predict import HELD, KILLED, REFUSED, HogState, Outcome, ResizePrediction, judge, predict_resize
from oomtools.verdict import PASSED, Item
from oomtools.verify.arguments import (
    EXIT_AS_PREDICTED,
    EXIT_BAD_ARGUMENTS,
    EXIT_INTERRUPTED,
    EXIT_NOT_AS_PREDICTED,
    EXIT_UNREACHABLE,
    BadArguments,
    Unreachable,
    duration,
)
from oomtools.verify.observe import call, kube_api, read_workload, stack_outputs, until_answers
from oomtools.verify.report import VERDICTS
from workload import logfmt

POLL_SECONDS: Final = 0.5
KILL_GRACE_SECONDS: Final = 10.0  # past the latest step predicted: the kubelet's report of the kill
WITHDRAW_SECONDS: Final = 30.0

CODE_MEANINGS: Final = {
    EXIT_AS_PREDICTED: "the kubelet did what was predicted (refused, held, or killed in the steps predicted)",
    EXIT_NOT_AS_PREDICTED: "it did not (the verdict line's failed= says which check)",
    EXIT_BAD_ARGUMENTS: "a bad argument, no deployed stack or running hog to resize, or a resize the API server "
    "refuses (a LimitRange's bounds, the rights to patch pods/resize, a Burstable pod's limit at or below its "
    "request): one line says which",
    EXIT_UNREACHABLE: "the cluster cannot be reached (asked again until --timeout)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

DESCRIPTION: Final = """Change the running hog's memory limit in place, as VPA's updater does (a JSON patch to the pod's
`resize` subresource: the limit, and the request with it, so that a Guaranteed pod stays Guaranteed; a Burstable
pod's limit alone, above its request), and say whether what the kubelet did is what the hog's own figures predict.

    oom-killer resize --to-mb 64 --stack dev [--timeout 3m] [--hold 15s] [--leave]

Before the patch it reads the hog's log: what its cgroup is charged, its step, whether it holds at a ceiling (a
growing hog is patched right after a step, the most room a step gives). The kubelet refuses a limit at or below
the pod's or the container's usage (PodResizeInProgress, reason Error); it applies one above, and a hog that grows
past it is OOM-killed; one that holds stays up. Each outcome is predicted, and two are named where the kubelet's
timing against the hog's next step decides. A refused resize is withdrawn (the old limit patched back), since the
kubelet would otherwise apply it when the container next starts; --leave keeps it. Needs `patch` on pods/resize
(infra/rights.yaml, the resizer's role) and Kubernetes 1.34 or later.
"""


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = DESCRIPTION
    parser.epilog = exit_codes(CODE_MEANINGS)
    parser.add_argument("--to-mb", type=_mib, required=True, metavar="N", help="the new memory limit, in MiB")
    parser.add_argument("--stack", default="dev", help="the Pulumi stack whose outputs name the hog's workload")
    parser.add_argument(
        "--outputs",
        metavar="FILE|JSON",
        help="the stack's outputs as `pulumi stack output --json` prints them, instead of asking pulumi",
    )
    parser.add_argument("--pod", help="the pod to resize, where the workload runs more than one")
    parser.add_argument(
        "--timeout",
        type=duration,
        default="3m",
        help="how long to wait at most: for a running hog with a step logged, then for the kubelet's answer",
    )
    parser.add_argument(
        "--hold",
        type=duration,
        default="15s",
        help="how long an applied limit must hold (no kill) to be judged held",
    )
    parser.add_argument("--leave", action="store_true", help="keep a refused resize instead of withdrawing it")
    parser.add_argument("--kubeconfig", help="a kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", help="a kube context (default: the current one)")
    return parser


def _mib(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MiB, 1 or more")
    return int(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    try:
        return configure(Parser(prog="oom-killer resize")).parse_args(argv)
    except UsageError as error:
        raise BadArguments(str(error)) from error


class Pods:
    """The hog's pods through the API: read as dicts, their logs, and the patch."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core, self.namespace = core, namespace

    def listed(self, selector: str) -> list[dict[str, Any]]:
        pods = call(self.core.list_namespaced_pod, self.namespace, label_selector=selector)
        return [self.core.api_client.sanitize_for_serialization(pod) for pod in pods.items]

    def read(self, name: str) -> dict[str, Any]:
        pod = call(self.core.read_namespaced_pod, name, self.namespace)
        return self.core.api_client.sanitize_for_serialization(pod)  # type: ignore[no-any-return]

    def log(self, name: str, container: str) -> str:
        return str(call(self.core.read_namespaced_pod_log, name, self.namespace, container=container))

    def patch(self, name: str, ops: list[dict[str, str]]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            call(self.core.patch_namespaced_pod_resize, name, self.namespace, ops)
        except ApiException as error:
            raise Refused(error.status, _api_message(error)) from error


class Refused(Exception):
    """The API server refused the patch (a LimitRange, the rights, an old server): its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _api_message(error: Any) -> str:
    import json

    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"


def choose_pod(pods: list[dict[str, Any]], wanted: str | None) -> dict[str, Any] | None:
    """The pod to resize: the one named, else the only one not being deleted (None: none yet)."""
    live = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
    if wanted is not None:
        return next((pod for pod in live if pod["metadata"]["name"] == wanted), None)
    if len(live) > 1:
        names = ", ".join(sorted(pod["metadata"]["name"] for pod in live))
        raise BadArguments(f"{len(live)} pods ({names}): name the one to resize with --pod")
    return live[0] if live else None


def ready(
    pods: Pods,
    selector: str,
    wanted: str | None,
    deadline: float,
    clock: Callable[[], float],
    to_mib: int | None = None,
) -> tuple[Target, str, HogState]:
    """Wait for the hog to run with a step logged (or holding), then for its next line where it is still growing:
    the patch goes right after a step. The pod's target, the container's id, and the hog as it stands. A resize to
    `to_mib` the API server would refuse for the pod (refusal) is a bad argument as soon as the pod is read."""
    seen_lines: int | None = None
    while True:
        pod = choose_pod(pods.listed(selector), wanted)
        target = None if pod is None else target_of(pod)
        container_id = None if pod is None or target is None else running_container_id(pod, target.container)
        if pod is not None and target is None:
            raise BadArguments(f"pod {pod['metadata']['name']}: no memory limit declared, nothing to resize")
        refused = None if target is None or to_mib is None else refusal(target, to_mib)
        if refused is not None:
            raise BadArguments(refused)
        if pod is not None and target is not None and container_id is not None:
            log = pods.log(target.pod, target.container)
            hog = hog_state(target.limit_mib, log, has_restarted(pod, target.container))
            if hog is not None and (hog.holding or (seen_lines is not None and lines_in(log) > seen_lines)):
                return target, container_id, hog
            if hog is not None and seen_lines is None:
                seen_lines = lines_in(log)
        if clock() > deadline:
            what = "no pod" if pod is None else "no running hog with a step logged"
            raise BadArguments(f"{what} to resize within --timeout (selector {selector})")
        time.sleep(POLL_SECONDS / 2)


def watch_outcome(
    pods: Pods,
    target: Target,
    container_id: str,
    hog: HogState,
    prediction: ResizePrediction,
    hold: float,
    deadline: float,
    clock: Callable[[], float],
    say: Callable[[str], None],
) -> Outcome:
    """Read the pod until the kubelet has answered: refused; applied, then held for `hold` seconds (or, where a kill
    is predicted, until its latest step has passed); or killed."""
    sent = clock()
    applied_at: float | None = None
    said_error: str | None = None
    last = Reading()
    while True:
        now = clock()
        last = read_pod(pods.read(target.pod), target, container_id)
        if last.killed is not None:
            return Outcome(
                KILLED if applied_at is not None or last.applied_mib == prediction.to_mib else None,
                now - sent,
                ""
                if applied_at is not None
                else f"killed before the new limit showed applied ({last.applied_mib} MiB)",
                last.applied_mib,
                killed_step(last.killed),
                str(last.killed.get("reason") or ""),
                last.killed.get("exitCode"),
            )
        if last.refused is not None:
            return Outcome(REFUSED, now - sent, last.refused, last.applied_mib)
        if last.error is not None and last.error != said_error:
            said_error = last.error
            say(logfmt.line(event="kubelet-error", seconds=round(now - sent, 1), message=last.error))
        if applied_at is None and last.applied_mib == prediction.to_mib and not last.in_progress:
            applied_at = now
            say(logfmt.line(event="applied", seconds=round(now - sent, 1), limit_mib=last.applied_mib))
        if applied_at is not None and now - applied_at >= watch_after_applied(hog, prediction, hold):
            return Outcome(HELD, now - sent, f"no kill in {now - applied_at:.0f} s", last.applied_mib)
        if now > deadline:
            shown = (
                last.pending
                or (f"the kubelet's error: {last.error}" if last.error else None)
                or ("in progress" if last.in_progress else f"limit {last.applied_mib} MiB")
            )
            return Outcome(None, now - sent, f"no answer within --timeout: {shown}", last.applied_mib)
        time.sleep(POLL_SECONDS)


def watch_after_applied(hog: HogState, prediction: ResizePrediction, hold: float) -> float:
    """How long an applied limit is watched for a kill: --hold, or where a kill is predicted, until its latest step
    and the kubelet's report of it have passed."""
    if prediction.kill is None or KILLED not in prediction.outcomes:
        return hold
    steps_left = max(prediction.kill.latest - hog.step, 0)
    return max(hold, steps_left * hog.interval_ms / 1000 + KILL_GRACE_SECONDS)


def withdraw(pods: Pods, target: Target, clock: Callable[[], float]) -> bool:
    """Patch the old limit (and request) back after a refusal; whether the kubelet's error condition went."""
    pods.patch(target.pod, resize_patch(target, target.limit_mib, target.request_mib))
    until = clock() + WITHDRAW_SECONDS
    while clock() < until:
        pod = pods.read(target.pod)
        if read_pod(pod, target, "").refused is None:
            return True
        time.sleep(POLL_SECONDS)
    return False


def verdict_line(tree: Item, prediction: ResizePrediction, hog: HogState, outcome: Outcome, scope: str) -> str:
    kill = prediction.kill
    return logfmt.line(
        resize=outcome.what or "none",
        verdict=VERDICTS[tree.status],
        predicted="|".join(prediction.outcomes),
        scope=scope,
        from_mib=hog.limit_mib,
        to_mib=prediction.to_mib,
        usage_mib=hog.usage_mib,
        **({"predicted_steps": f"{kill.earliest}..{kill.latest}"} if kill and KILLED in prediction.outcomes else {}),
        **({"kill_step": outcome.kill_step} if outcome.kill_step is not None else {}),
        **({"reason": outcome.reason, "exit_code": outcome.exit_code} if outcome.what == KILLED else {}),
        **({"message": outcome.detail} if outcome.what == REFUSED else {}),
        seconds=round(outcome.seconds, 1),
        failed="; ".join(f"{c.name} ({c.detail})" for c in tree.failed) or None,
    )


def run(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], float] = time.monotonic) -> int:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    def note(text: str) -> None:
        print(text, file=err, flush=True)

    deadline = clock() + args.timeout
    outputs = stack_outputs(args.stack, args.outputs)
    namespace, name = str(outputs["namespace"]), str(outputs["workloadName"])
    kind = str(outputs.get("workloadKind", "Deployment"))
    core, apps = kube_api(args.kubeconfig, args.context)
    workload = until_answers(lambda: read_workload(apps, kind, namespace, name), args.timeout, note)
    if workload is None:
        raise BadArguments(f"no {kind.lower()} {namespace}/{name} on this kube context: deploy it (make up)")
    selector = ",".join(f"{k}={v}" for k, v in sorted(workload.spec.selector.match_labels.items()))
    pods = Pods(core, namespace)
    target, container_id, hog = ready(pods, selector, args.pod, deadline, clock, args.to_mb)
    prediction = predict_resize(hog, args.to_mb)
    say(
        logfmt.line(
            event="resize",
            pod=target.pod,
            container=target.container,
            scope=target.scope,
            from_mib=hog.limit_mib,
            to_mib=args.to_mb,
            **({"request_mib": target.request_mib} if target.burstable else {}),  # kept: a Burstable pod's
            **({"swap_mib": hog.swap_mib} if hog.swap_mib else {}),  # the kill comes that much later
            usage_mib=hog.usage_mib,
            step=hog.step,
            holding=hog.holding,
            predicted="|".join(prediction.outcomes),
            **({"predicted_steps": f"{prediction.kill.earliest}..{prediction.kill.latest}"} if prediction.kill else {}),
            why=prediction.why,
        )
    )
    try:
        pods.patch(target.pod, resize_patch(target, args.to_mb))
    except Refused as refused:
        raise BadArguments(f"--to-mb {args.to_mb}: the API server refused the resize: {refused}") from refused
    outcome = watch_outcome(pods, target, container_id, hog, prediction, args.hold, deadline, clock, say)
    if outcome.what == REFUSED:
        say(logfmt.line(event="refused", seconds=round(outcome.seconds, 1), message=outcome.detail))
        if not args.leave:
            cleared = withdraw(pods, target, clock)
            say(logfmt.line(event="withdrawn", limit_mib=target.limit_mib, cleared=cleared))
    elif outcome.what == KILLED:
        say(
            logfmt.line(
                event="killed", seconds=round(outcome.seconds, 1), reason=outcome.reason, exit_code=outcome.exit_code
            )
        )
    elif outcome.what == HELD:
        say(logfmt.line(event="held", seconds=round(outcome.seconds, 1), limit_mib=outcome.applied_mib))
    tree = judge(prediction, outcome)
    say(verdict_line(tree, prediction, hog, outcome, target.scope))
    return EXIT_AS_PREDICTED if tree.status == PASSED else EXIT_NOT_AS_PREDICTED


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        return run(args, out, err)
    except BadArguments as error:
        print(f"resize: {error}", file=err)
        return EXIT_BAD_ARGUMENTS
    except Unreachable as error:
        print(f"resize: {error}", file=err)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("resize: interrupted", file=err)
        return EXIT_INTERRUPTED
