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

# One concern per module: arguments.py (the command line and its exit codes), observe.py (reading the stack, the
# cluster and Prometheus), judge.py (the prediction and the checks), report.py (what is printed, the JUnit report),
# command.py (run and main, which tie them together). What other code and the tests use is re-exported here.
from oomtools.verify.arguments import (
    CODE_MEANINGS,
    EXIT_AS_PREDICTED,
    EXIT_BAD_ARGUMENTS,
    EXIT_INTERRUPTED,
    EXIT_NOT_AS_PREDICTED,
    EXIT_UNREACHABLE,
    BadArguments,
    Unreachable,
    configure,
    parse_args,
    parse_duration,
    prometheus_access,
)
from oomtools.verify.command import main, run
from oomtools.verify.judge import Check, Prediction, checks_for, predict
from oomtools.verify.observe import (
    BackOff,
    Death,
    Observed,
    WorkerKill,
    kube_api,
    read_deployment,
    record_pods,
    record_worker_kills,
    stack_outputs,
)
from oomtools.verify.report import write_junit

__all__ = [
    "CODE_MEANINGS",
    "EXIT_AS_PREDICTED",
    "EXIT_BAD_ARGUMENTS",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_AS_PREDICTED",
    "EXIT_UNREACHABLE",
    "BackOff",
    "BadArguments",
    "Check",
    "Death",
    "Observed",
    "Prediction",
    "Unreachable",
    "WorkerKill",
    "checks_for",
    "configure",
    "kube_api",
    "main",
    "parse_args",
    "parse_duration",
    "predict",
    "prometheus_access",
    "read_deployment",
    "record_pods",
    "record_worker_kills",
    "run",
    "stack_outputs",
    "write_junit",
]
