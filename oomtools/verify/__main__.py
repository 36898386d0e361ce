"""`python -m oomtools.verify`: the same as `oom-killer verify`."""

import sys

from oomtools.verify.command import main

sys.exit(main())
