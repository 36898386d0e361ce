"""Each memory kind and process model described once: what differs between them, for the hog itself, the stack that
declares its pod (infra/), the kill prediction, and the judges of `make demo` and `make verify`.

In the spirit of stress-ng's one file per stressor: a branch on a kind's or a model's name anywhere else is a fact
that belongs here. Stdlib only and nothing imported, because the hog reads it (every import adds to the baseline RSS
its start line reports); plain classes with __slots__ for the same reason.
"""

from __future__ import annotations

# What the hog's cgroup is charged before its first step, per interpreter: the interpreter, its libraries and the
# workload's modules. It depends on the node. Measured on Docker (cgroup v1): 5 MiB charged where the interpreter's
# files were already in the page cache (charged to whoever read them first), of an 11.4 MiB RSS; where this container
# reads them first, its whole RSS and the read-ahead around it. Rounded outwards to a range.
BASELINE_MIN_MIB = 3
BASELINE_MAX_MIB = 16

# What a judge calls the end of a run (demo's verdict line, verify's checks).
OOM_KILLED = "OOMKilled"  # the container's main process killed: exit 137, a restart
WORKER_KILLED = "worker-killed"  # a supervised worker killed, the container lives on
HELD = "held-below-limit"  # it stopped growing (a ceiling, or page cache the kernel reclaims) and holds


class MemoryKind:
    """What the hog fills, and what follows from it."""

    __slots__ = (
        "name",
        "fills",
        "writes_files",
        "needs_memory_filesystem",
        "default_dir",
        "sync",
        "killed",
        "holds_at_limits",
        "keeps_charge_after_death",
        "empty_dir_medium",
    )

    def __init__(
        self,
        name: str,
        fills: str,
        writes_files: bool,
        needs_memory_filesystem: bool | None,
        default_dir: str,
        sync: bool,
        killed: bool,
        holds_at_limits: int,
        keeps_charge_after_death: bool,
        empty_dir_medium: str | None,
    ) -> None:
        self.name = name
        self.fills = fills  # one line, for the docs and the help
        # Files in MEMORY_DIR (an emptyDir in the pod) rather than the process's own heap.
        self.writes_files = writes_files
        # True: MEMORY_DIR must be a tmpfs; False: it must be a disk filesystem (whose pages can be reclaimed);
        # None: no directory at all.
        self.needs_memory_filesystem = needs_memory_filesystem
        self.default_dir = default_dir  # MEMORY_DIR when unset; "" where it must be given (or is not used)
        self.sync = sync  # each file synced to disk, so that its page cache is clean and the kernel can drop it
        # The kernel kills at the limit (its pages cannot be reclaimed); False: it reclaims them and no kill comes, so
        # a ceiling may exceed the limit and none is predicted.
        self.killed = killed
        # Without a ceiling it holds at this many times the limit (0: it grows until killed); never unbounded on a
        # disk, and the stack sizes the disk for it.
        self.holds_at_limits = holds_at_limits
        # Its pages stay charged to the pod after the process dies (an emptyDir medium Memory keeps its files): a
        # restart in the same pod starts full unless someone removes them first.
        self.keeps_charge_after_death = keeps_charge_after_death
        # The pod's emptyDir for MEMORY_DIR: "Memory" (a tmpfs), "" (the node's disk), None (no volume).
        self.empty_dir_medium = empty_dir_medium

    @property
    def on_node_disk(self) -> bool:
        """Its emptyDir is on the node's disk: the container needs ephemeral-storage for it."""
        return self.empty_dir_medium == ""

    def hold_ceiling_mib(self, ceiling_mib: int | None, limit_mib: int | None) -> int | None:
        """Where it stops growing: the ceiling, else its own multiple of the limit (None: it grows until killed, or
        there is no limit to take a multiple of)."""
        if ceiling_mib:
            return ceiling_mib
        if self.holds_at_limits and limit_mib is not None:
            return self.holds_at_limits * limit_mib
        return None

    def __repr__(self) -> str:
        return f"MemoryKind({self.name})"


class ProcessModel:
    """Who runs the hog, and what follows from it."""

    __slots__ = ("name", "runs", "interpreters", "container_survives_kill", "cleans_up_after_kill")

    def __init__(
        self, name: str, runs: str, interpreters: int, container_survives_kill: bool, cleans_up_after_kill: bool
    ) -> None:
        self.name = name
        self.runs = runs  # one line, for the docs and the help
        # Interpreters charged to the cgroup before the first step: each takes up to BASELINE_MAX_MIB.
        self.interpreters = interpreters
        # A kill takes a worker and PID 1 lives on (where the kernel does not kill the whole group: cgroup v2's
        # memory.oom.group=1 kills both, and the container restarts as a single hog's does).
        self.container_survives_kill = container_survives_kill
        # PID 1 removes a killed worker's files before it starts the next.
        self.cleans_up_after_kill = cleans_up_after_kill

    @property
    def baseline_max_mib(self) -> int:
        """The most the interpreters may be charged before the first step (a node that has not cached them)."""
        return self.interpreters * BASELINE_MAX_MIB

    @property
    def baseline_min_mib(self) -> int:
        """The least: what the kernel cannot take back of it (where the node's cache already held their files)."""
        return self.interpreters * BASELINE_MIN_MIB

    def room_mib(self, limit_mib: int) -> int:
        """What the limit leaves for the hog after the largest baseline: the most a step or a ceiling may take."""
        return limit_mib - self.baseline_max_mib

    def __repr__(self) -> str:
        return f"ProcessModel({self.name})"


ANONYMOUS = MemoryKind(
    "anonymous",
    fills="its own heap (anonymous memory): killed at the limit",
    writes_files=False,
    needs_memory_filesystem=None,
    default_dir="",
    sync=False,
    killed=True,
    holds_at_limits=0,
    keeps_charge_after_death=False,
    empty_dir_medium=None,
)
TMPFS = MemoryKind(
    "tmpfs",
    fills="files in an emptyDir with medium Memory (shmem), charged to the limit and killed there",
    writes_files=True,
    needs_memory_filesystem=True,
    default_dir="/dev/shm",  # noqa: S108 (the tmpfs every container has; the hog writes only its own files)
    sync=False,
    killed=True,
    holds_at_limits=0,
    keeps_charge_after_death=True,
    empty_dir_medium="Memory",
)
PAGECACHE = MemoryKind(
    "pagecache",
    fills="files in an emptyDir on disk: page cache, reclaimed at the limit, never killed",
    writes_files=True,
    needs_memory_filesystem=False,
    default_dir="",
    sync=True,
    killed=False,
    holds_at_limits=2,
    keeps_charge_after_death=False,
    empty_dir_medium="",
)
SINGLE = ProcessModel(
    "single", runs="PID 1 is the hog", interpreters=1, container_survives_kill=False, cleans_up_after_kill=False
)
SUPERVISED = ProcessModel(
    "supervised",
    runs="PID 1 runs the hog as a worker and restarts it when it is OOM-killed, as gunicorn or php-fpm do",
    interpreters=2,  # the supervisor and its worker
    container_survives_kill=True,
    cleans_up_after_kill=True,
)

# By name, the default first.
KINDS = {kind.name: kind for kind in (ANONYMOUS, TMPFS, PAGECACHE)}
MODELS = {model.name: model for model in (SINGLE, SUPERVISED)}
MEMORY_KINDS = tuple(KINDS)
PROCESS_MODELS = tuple(MODELS)


def memory_kind(name: str) -> MemoryKind:
    """The kind by its name (MEMORY_KIND, memoryKind); KeyError for another."""
    return KINDS[name]


def process_model(name: str) -> ProcessModel:
    """The model by its name (PROCESS_MODEL, processModel); KeyError for another."""
    return MODELS[name]


def restarts_into_full_pod(kind: MemoryKind, model: ProcessModel) -> bool:
    """A killed run's charge stays in the pod and nobody removes it: the restart mostly dies at start
    (docs/memory-kinds.md, a tmpfs pod does not recover)."""
    return kind.keeps_charge_after_death and not model.cleans_up_after_kill


def expected_end(kind: MemoryKind, model: ProcessModel, holds: bool, oom_group: bool | None = None) -> str:
    """How a run ends by the settings (OOM_KILLED, WORKER_KILLED or HELD). holds: a ceiling the prediction says it
    reaches first; oom_group: cgroup v2's memory.oom.group as the start line gave it (None where not given)."""
    if holds or not kind.killed:
        return HELD
    if model.container_survives_kill and not oom_group:
        return WORKER_KILLED
    return OOM_KILLED
