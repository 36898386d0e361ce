"""How the program ends when the engine stops it: quietly, under the error that stopped it."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def exit_quietly_when_interrupted() -> None:
    """Make an interrupt end the program with exit code 1 and nothing printed.

    When `pulumi up` fails (a build that fails, a push the registry refuses) or is cancelled, the Python language
    host (3.2xx) interrupts the program (SIGINT) while it still waits on the engine. Python would raise
    KeyboardInterrupt in the SDK's event loop and print that loop's tracebacks, some 80 lines, under the one line
    that says what went wrong; even a SystemExit leaves the SDK's unfinished coroutine to print its own at shutdown.
    The engine has already stopped and said why: exiting at once is all there is left to do.
    """

    def interrupted(_signum: int, _frame: FrameType | None) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    signal.signal(signal.SIGINT, interrupted)
