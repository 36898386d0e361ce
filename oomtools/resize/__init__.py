"""`oom-killer resize`: change the running hog's memory limit in place, as VPA's updater does, and say whether the
kubelet refused it, applied it and the hog held, or applied it and the hog was killed, as predicted (its --help:
command.DESCRIPTION).

    predict   what a resize will do, from what the hog last logged; the verdict on what happened
    pod       what is read of the pod and its log, and the patch sent (pure functions of dicts)
    command   the command line, the API calls and the watch, the lines it prints
"""

from oomtools.resize.command import CODE_MEANINGS, configure, main, run
from oomtools.verify.arguments import EXIT_AS_PREDICTED, EXIT_BAD_ARGUMENTS, EXIT_NOT_AS_PREDICTED

__all__ = [
    "CODE_MEANINGS",
    "EXIT_AS_PREDICTED",
    "EXIT_BAD_ARGUMENTS",
    "EXIT_NOT_AS_PREDICTED",
    "configure",
    "main",
    "run",
]
