"""The memory hog's loop: the only place in the workload with side effects."""

from __future__ import annotations

import os
import signal
import sys
import time

from workload import logfmt
from workload.cgroup import MemoryCgroup, discover
from workload.kinds import memory_kind, process_model
from workload.memory import (
    FILE_PREFIX,
    FILE_SUFFIX,
    MIB,
    allocate,
    filesystem_of,
    memory_dir_problem,
    remove_own_files,
    rss_bytes,
    write_file,
)
from workload.predict import (
    POD_SANDBOX_MAX_BYTES,
    asked_mib,
    binding_limit,
    ceiling_from_pct,
    predict_kill,
    predict_throttle,
)
from workload.settings import Settings, SettingsError, parse_settings

EXIT_STOPPED = 0
EXIT_ALLOCATION_REFUSED = 1
EXIT_BAD_SETTINGS = 2

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HOLD_WAKE_SECONDS = 3600.0
# Set by the supervised model's PID 1 in its child's environment: this process is the worker.
WORKER_VARIABLE = "OOM_KILLER_WORKER"


def next_step_mib(settings: Settings, allocated_mib: int) -> int:
    """MiB to take in the next step: the increment, or what is left below the ceiling (0 when reached)."""
    if settings.ceiling_mib is None:
        return settings.increment_mib
    return max(0, min(settings.increment_mib, settings.ceiling_mib - allocated_mib))


class Counters:
    """The kernel's v2 memory.events high and max counts when the hog started and after its latest step, so
    that a step line can say what was counted since the start and whether this very step went over high."""

    __slots__ = ("high_at_start", "max_at_start", "high_before")

    def __init__(self, cgroup: MemoryCgroup | None) -> None:
        high, hit_max = (None, None) if cgroup is None else cgroup.events()
        self.high_at_start = self.high_before = high or 0
        self.max_at_start = hit_max or 0


def kernel_fields(cgroup: MemoryCgroup) -> dict[str, object]:
    """What the kernel says the cgroup holds: its usage and percent of the limit, the working set a kubelet
    computes from it, and memory.stat's split (anon, file, shmem)."""
    fields: dict[str, object] = {}
    usage = cgroup.usage_bytes()
    if usage is not None:
        fields["cgroup_usage_mib"] = usage // MIB
        if cgroup.limit_bytes is not None:
            fields["limit_pct"] = 100 * usage / cgroup.limit_bytes
    stat = cgroup.memory_stat()
    if usage is not None and "inactive_file" in stat:
        # The kubelet's and cAdvisor's working set (what `kubectl top` shows and eviction ranks by).
        fields["working_set_mib"] = max(usage - stat["inactive_file"], 0) // MIB
    for name in ("anon", "file", "shmem"):
        if name in stat:
            fields[f"{name}_mib"] = stat[name] // MIB
    return fields


def step_line(
    step: int,
    allocated_mib: int,
    rss: int,
    cgroup: MemoryCgroup | None,
    counters: Counters | None = None,
    step_seconds: float = 0.0,
) -> str:
    """The step's line: what the hog holds, and what the kernel says the cgroup holds (its usage, the working
    set a kubelet computes from it, and memory.stat's split), with v2's events and pressure where present."""
    fields: dict[str, object] = {
        "event": "step",
        "step": step,
        "allocated_mib": allocated_mib,
        "rss_mib": rss // MIB,
    }
    if cgroup is None:
        return logfmt.line(**fields)
    fields.update(kernel_fields(cgroup))
    high, hit_max = cgroup.events()
    counters = counters or Counters(None)
    if high is not None:
        fields["high_events"] = high - counters.high_at_start
    if hit_max is not None:
        fields["max_events"] = hit_max - counters.max_at_start
    some, full = cgroup.pressure()
    if some is not None:
        fields["pressure_some_avg10"] = some
    if full is not None:
        fields["pressure_full_avg10"] = full
    if cgroup.high_bytes is not None and high is not None:
        # A step over memory.high is slowed by the kernel's reclaim and penalty sleeps: say so, and how long it
        # took, rather than leave a gap in the log that looks like a hang.
        fields["throttled"] = high > counters.high_before
        if high > counters.high_before:
            fields["step_ms"] = round(step_seconds * 1000)
        counters.high_before = high
    return logfmt.line(**fields)


def write_termination_message(path: str, text: str) -> bool:
    """Overwrite the Kubernetes termination message file; False where it is missing or not writable.

    The file is never created: the kubelet creates it (and mounts it, writable even on a read-only root), and
    a hog run by hand as root should not leave a stray file in /dev.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError:
        return False
    try:
        os.write(descriptor, (text + "\n").encode())
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return True


def say(text: str, *, error: bool = False) -> None:
    print(text, file=sys.stderr if error else sys.stdout, flush=True)


def bad_setting(error: SettingsError) -> int:
    say(
        logfmt.line(
            level="error", event="bad_setting", variable=error.variable, value=error.value, reason=error.reason
        ),
        error=True,
    )
    return EXIT_BAD_SETTINGS


def check_memory_dir(settings: Settings) -> None:
    """Raise SettingsError where MEMORY_DIR is missing or on the wrong kind of filesystem for MEMORY_KIND."""
    if not memory_kind(settings.memory_kind).writes_files:
        return
    directory = settings.memory_dir
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise SettingsError("MEMORY_DIR", directory, "must be a directory this process can write to")
    with open("/proc/self/mountinfo") as mountinfo:
        fstype = filesystem_of(os.path.realpath(directory), mountinfo.read())
    problem = memory_dir_problem(settings.memory_kind, fstype)
    if problem is not None:
        raise SettingsError("MEMORY_DIR", directory, problem)


def main(env: dict[str, str] | None = None) -> int:
    environment = dict(os.environ) if env is None else env
    try:
        settings = parse_settings(environment)
        check_memory_dir(settings)
    except SettingsError as error:
        return bad_setting(error)

    worker = environment.get(WORKER_VARIABLE) == "1"
    kind = memory_kind(settings.memory_kind)
    if process_model(settings.process_model).interpreters > 1 and not worker:
        from workload.supervise import supervise  # only PID 1 of the supervised model needs it

        return supervise(settings, environment)
    if worker:
        # The supervised model's worker: the one the kernel should pick when the cgroup is full, as it picks the
        # biggest worker of a pre-fork server (a tmpfs hog's own RSS is as small as its supervisor's).
        try:
            with open("/proc/self/oom_score_adj", "w") as adjust:
                adjust.write("1000")
        except OSError:
            pass

    cgroup = discover()
    limit = cgroup.limit_bytes if cgroup is not None else None
    limit_source = None
    if settings.pod_limit_mib is not None:
        # The pod's limit (limitScope=pod): every step line's percent is of it.
        limit, limit_source = binding_limit(limit, settings.pod_limit_mib * MIB)
        if cgroup is not None:
            cgroup.limit_bytes = limit
    if settings.ceiling_pct is not None and limit is None:
        say(
            logfmt.line(
                level="error",
                event="refused",
                reason=f"MEMORY_CEILING_PCT={settings.ceiling_pct} is a percent of the memory limit, and no memory "
                "limit applies to this process",
                fix="run it under a memory limit (a container's resources.limits.memory), or set MEMORY_CEILING_MB",
            ),
            error=True,
        )
        return EXIT_BAD_SETTINGS
    if kind.holds_at_limits and settings.ceiling_mib is None and settings.ceiling_pct is None:
        # Page cache is reclaimed, not killed: it holds at a multiple of the limit, never fills the disk.
        settings.ceiling_mib = kind.hold_ceiling_mib(None, None if limit is None else limit // MIB)
        if settings.ceiling_mib is None:
            say(
                logfmt.line(
                    level="error",
                    event="refused",
                    reason=f"MEMORY_KIND={kind.name} holds at MEMORY_CEILING_MB or {kind.holds_at_limits} times "
                    "the memory limit, and there is neither: it would fill the disk",
                    fix="set MEMORY_CEILING_MB, or run it under a memory limit",
                ),
                error=True,
            )
            return EXIT_BAD_SETTINGS
    if limit is None and settings.ceiling_mib is None and not settings.allow_unlimited:
        say(
            logfmt.line(
                level="error",
                event="refused",
                reason="no memory limit applies to this process, so it would grow until the whole machine runs out",
                fix="run it under a memory limit (a container's resources.limits.memory), "
                "or set MEMORY_CEILING_MB, or set ALLOW_UNLIMITED=1",
            ),
            error=True,
        )
        return EXIT_BAD_SETTINGS

    # Blocked, the stop signals wait in the kernel until sigtimedwait() takes them: the pause between steps
    # is the wait itself, so a stop is seen at once, and never in the middle of a step.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    baseline = rss_bytes()
    usage = cgroup.usage_bytes() if cgroup is not None else None
    # The limit is measured against the cgroup's charge, which can be below the RSS (shared libraries already in
    # the page cache were charged to whoever read them first).
    charged = baseline if usage is None else usage
    if settings.ceiling_pct is not None and limit is not None:
        settings.ceiling_mib = ceiling_from_pct(settings.ceiling_pct, limit, charged)
    swap = cgroup.swap_bytes if cgroup is not None else None
    high = cgroup.high_bytes if cgroup is not None else None
    # Page cache in the charge (the interpreter's files, where this cgroup read them first) is taken back by the
    # kernel before it kills, and on v2 so are the kernel objects it can free (the dentries and inodes of the
    # files a first run on a node looked up): the kill comes in a range of steps, from the whole charge to the part
    # the kernel cannot take back.
    stat = cgroup.memory_stat() if cgroup is not None and usage is not None else {}
    reclaimable = max(stat.get("file", 0) - stat.get("shmem", 0), 0) + stat.get("slab_reclaimable", 0)
    kill = predict_kill(
        limit,
        charged,
        settings.increment_mib,
        settings.interval_ms,
        settings.ceiling_mib,
        swap,
        reclaimable,
        stat.get("inactive_file"),
        POD_SANDBOX_MAX_BYTES if limit_source is not None else 0,
    )
    if not kind.killed:
        kill = None  # page cache is reclaimed at the limit: no kill comes
    throttle = predict_throttle(high, charged, settings.increment_mib, settings.ceiling_mib)
    start: dict[str, object] = {
        "event": "start",
        "pid": os.getpid(),
        "limit_mib": None if limit is None else limit // MIB,
        "cgroup": None if cgroup is None else f"v{cgroup.version}:{cgroup.limit_path}",
        "increment_mib": settings.increment_mib,
        "interval_ms": settings.interval_ms,
        "ceiling_mib": settings.ceiling_mib,
        "memory_kind": settings.memory_kind,
        "baseline_rss_mib": baseline / MIB,
        "cgroup_usage_mib": None if usage is None else usage // MIB,
        "reclaimable_mib": None if usage is None else reclaimable // MIB,
        "predicted_steps": None if kill is None else kill.expected,
        "predicted_steps_earliest": None if kill is None else kill.earliest,
        "predicted_steps_latest": None if kill is None else kill.latest,
        "predicted_seconds": None if kill is None else kill.seconds(kill.expected),
    }
    # Only where they apply, so that a plain line stays plain: each changes what the user will see.
    if settings.ceiling_pct is not None and limit is not None:
        start["ceiling_pct"] = settings.ceiling_pct
        start["asked_mib"] = asked_mib(settings.ceiling_pct, limit)
    if limit_source is not None:
        start["limit_scope"] = "pod"
        start["limit_source"] = limit_source
    if cgroup is not None and cgroup.oom_group is not None:
        start["oom_group"] = cgroup.oom_group
    if high is not None:
        start["memory_high_mib"] = high // MIB
        if throttle is not None:
            start["predicted_throttle_step"] = throttle
    if swap is not None:
        start["swap_max_mib"] = swap // MIB
    if settings.memory_dir:
        # An emptyDir outlives a container restart: what an earlier run left there would count against this one.
        start["memory_dir"] = settings.memory_dir
        start["removed_files"] = remove_own_files(settings.memory_dir)
    say(logfmt.line(**start))
    counters = Counters(cgroup)

    blocks = []  # every mapping stays referenced, so its memory stays resident until the process ends
    allocated_mib = step = 0
    termination_file = settings.termination_message_path
    received = None
    # Grow: a step, then the pause (which a stop signal cuts short), until stopped or at the ceiling.
    while received is None and (size_mib := next_step_mib(settings, allocated_mib)):
        began = time.monotonic()
        try:
            if not kind.writes_files:
                blocks.append(allocate(size_mib * MIB))
            else:
                name = f"{FILE_PREFIX}{os.getpid()}-{step + 1}{FILE_SUFFIX}"
                write_file(settings.memory_dir, name, size_mib * MIB, sync=kind.sync)
        except OSError as error:
            say(
                logfmt.line(
                    level="error",
                    event="allocation_refused",
                    step=step + 1,
                    size_mib=size_mib,
                    error=error.strerror,
                ),
                error=True,
            )
            if settings.memory_dir:
                remove_own_files(settings.memory_dir)
            return EXIT_ALLOCATION_REFUSED
        step += 1
        allocated_mib += size_mib
        line = step_line(step, allocated_mib, rss_bytes(), cgroup, counters, time.monotonic() - began)
        say(line)
        if termination_file and not write_termination_message(termination_file, line):
            termination_file = ""  # missing or read-only: stop trying, quietly
        received = signal.sigtimedwait(STOP_SIGNALS, settings.interval_ms / 1000)

    # Hold at the ceiling, asleep, until told to stop.
    if received is None:
        holding: dict[str, object] = {"event": "holding", "ceiling_mib": settings.ceiling_mib}
        if settings.ceiling_pct is not None and limit is not None:
            # What was asked against what the container is charged now (limit_pct below is that charge's percent).
            usage_now = cgroup.usage_bytes() if cgroup is not None else None
            holding["ceiling_pct"] = settings.ceiling_pct
            holding["asked_mib"] = asked_mib(settings.ceiling_pct, limit)
            holding["achieved_mib"] = None if usage_now is None else usage_now / MIB
        holding.update(allocated_mib=allocated_mib, rss_mib=rss_bytes() // MIB)
        say(logfmt.line(**holding, **({} if cgroup is None else kernel_fields(cgroup))))
    while received is None:
        received = signal.sigtimedwait(STOP_SIGNALS, HOLD_WAKE_SECONDS)

    stop: dict[str, object] = {
        "event": "stop",
        "signal": signal.Signals(received.si_signo).name,
        "step": step,
        "allocated_mib": allocated_mib,
        "rss_mib": rss_bytes() // MIB,
    }
    if settings.memory_dir:
        stop["removed_files"] = remove_own_files(settings.memory_dir)  # an emptyDir would keep them, and their charge
    say(logfmt.line(**stop))
    return EXIT_STOPPED
