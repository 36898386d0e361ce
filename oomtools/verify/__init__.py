"""`oom-killer verify`: watch a deployed stack through the Kubernetes API and say whether what its settings predict
happened (its --help: arguments.DESCRIPTION).

A pipeline, each stage importing only those before it:

    arguments    the command line, its exit codes, the two failures that end a run early
    prediction   what the stack's settings predict (the shared judge's facts: oomtools/verdict.py)
    observe      reads, and only reads: the stack, the cluster, Prometheus and Alertmanager; what it saw as events
    detectors    which signals saw each kill
    judge        the checks, as items of one result tree; fleet: an item per node
    report       every line, the tables, the verdict line and the JUnit report, from events and the tree
    command      run and main, which tie them together
"""

from oomtools.verify.arguments import (
    CODE_MEANINGS,
    EXIT_AS_PREDICTED,
    EXIT_BAD_ARGUMENTS,
    EXIT_INTERRUPTED,
    EXIT_NOT_AS_PREDICTED,
    EXIT_NOTHING_CHECKED,
    EXIT_UNREACHABLE,
    configure,
    parse_args,
    parse_duration,
    prometheus_access,
)
from oomtools.verify.command import main, run
from oomtools.verify.judge import checks_for
from oomtools.verify.observe import Death, Observed, WorkerKill, record_worker_kills, stack_outputs
from oomtools.verify.prediction import Prediction, predict
from oomtools.verify.report import write_junit

__all__ = [
    "CODE_MEANINGS",
    "EXIT_AS_PREDICTED",
    "EXIT_BAD_ARGUMENTS",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING_CHECKED",
    "EXIT_NOT_AS_PREDICTED",
    "EXIT_UNREACHABLE",
    "Death",
    "Observed",
    "Prediction",
    "WorkerKill",
    "checks_for",
    "configure",
    "main",
    "parse_args",
    "parse_duration",
    "predict",
    "prometheus_access",
    "record_worker_kills",
    "run",
    "stack_outputs",
    "write_junit",
]
