"""The supervised process model: PID 1 stays small and runs the hog as its child, as a pre-fork master (gunicorn,
uwsgi, php-fpm, nginx) runs its workers. When the child dies it says how, and how many OOM kills the cgroup has
counted, then starts another after the interval. Where the kernel kills the whole group (cgroup v2's
memory.oom.group=1), this process dies with its child and there is nothing to say: the container's exit is the
finding.
"""

from __future__ import annotations

import os
import signal
import sys

from workload import logfmt
from workload.cgroup import discover, oom_kill_count
from workload.kinds import memory_kind
from workload.memory import MIB, allocate, remove_own_files
from workload.settings import Settings

EXIT_STOPPED = 0
EXIT_BAD_SETTINGS = 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
WAKE_ON = (*STOP_SIGNALS, signal.SIGCHLD)
# SIGTERM to the child, then this long for it to go before SIGKILL: both are gone within a second.
CHILD_GRACE_SECONDS = 0.7
# With MEMORY_KIND=tmpfs a killed worker's files keep the cgroup full: the next page this process needs before it has
# removed them would have the kernel kill it too (the container soak saw it once in 25). It holds this much of its
# own, charged, and lets it go the moment a worker dies, so that its clean-up never needs a new charge.
RESERVE_BYTES = 2 * MIB


def how_it_ended(status: int) -> dict[str, object]:
    """A wait status as the fields of a child_exit line: the signal's name, or the exit code."""
    if os.WIFSIGNALED(status):
        return {"signal": signal.Signals(os.WTERMSIG(status)).name}
    return {"exit_code": os.waitstatus_to_exitcode(status)}


def _say(**fields: object) -> None:
    print(logfmt.line(**fields), flush=True)


def _stop(child: int, received: int, children: int, settings: Settings, counted_at: tuple[str, int] | None) -> int:
    """Stop the child (SIGTERM, then SIGKILL after the grace) and exit 0. A child the kernel killed just as the stop
    came (a SIGKILL this process never sent) is reported as the exit it was (child_exit), and not as stopped."""
    try:  # noqa: SIM105 (contextlib is kept out of the workload: baseline RSS)
        os.kill(child, signal.SIGTERM)
    except ProcessLookupError:
        pass
    done, status = os.waitpid(child, os.WNOHANG)
    if done != child:
        signal.sigtimedwait((signal.SIGCHLD,), CHILD_GRACE_SECONDS)
        done, status = os.waitpid(child, os.WNOHANG)
    if done != child:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        _child_exit(settings, counted_at, child, status, children)
        _stopped(received, children, None)
        return EXIT_STOPPED
    _stopped(received, children, child)
    return EXIT_STOPPED


def _stopped(received: int, children: int, worker: int | None) -> None:
    """The stop line. children: how many workers this process started, the one it stopped included; a stop in the
    restart interval stopped none (stopped_worker=none), so there children equals the workers that ended."""
    _say(
        event="stop",
        signal=signal.Signals(received).name,
        process_model="supervised",
        children=children,
        stopped_worker=worker,
    )


def supervise(settings: Settings, environment: dict[str, str]) -> int:
    # Blocked, the stop signals and the child's death wait for sigtimedwait(), so nothing interrupts a write.
    signal.pthread_sigmask(signal.SIG_BLOCK, WAKE_ON)
    cgroup = discover()
    counted_at = None if cgroup is None else (cgroup.path, cgroup.version)
    child_environment = {**environment, "OOM_KILLER_WORKER": "1"}
    command = [sys.executable, "-S", "-m", "workload"]
    start: dict[str, object] = {
        "event": "supervisor_start",
        "pid": os.getpid(),
        "process_model": "supervised",
        "restart_interval_ms": settings.interval_ms,
    }
    if cgroup is not None and cgroup.oom_group is not None:
        # 1: one OOM kills this process with its child, and the container restarts; 0: only the child dies.
        start["oom_group"] = cgroup.oom_group
    _say(**start)
    children = 0
    while True:
        reserve = allocate(RESERVE_BYTES) if memory_kind(settings.memory_kind).keeps_charge_after_death else None
        # The child starts with no signal blocked, as a process started by a runtime does.
        child = os.posix_spawn(command[0], command, child_environment, setsigmask=())
        children += 1
        stopping = None
        while True:
            received = signal.sigwaitinfo(WAKE_ON)
            if received.si_signo != signal.SIGCHLD:
                stopping = received.si_signo
                break
            done, status = os.waitpid(child, os.WNOHANG)
            if done == child:
                break
        if reserve is not None:
            # Unmapped: uncharged at once, room for the clean-up below, or for _stop's where the kernel killed the
            # worker just as the stop came.
            reserve.close()
        if stopping is not None:
            return _stop(child, stopping, children, settings, counted_at)
        if _child_exit(settings, counted_at, child, status, children).get("exit_code") == EXIT_BAD_SETTINGS:
            return EXIT_BAD_SETTINGS  # the child refused its settings (its line said why): a restart would too
        stop = signal.sigtimedwait(STOP_SIGNALS, settings.interval_ms / 1000)
        if stop is not None:
            _stopped(stop.si_signo, children, None)
            return EXIT_STOPPED


def _child_exit(
    settings: Settings, counted_at: tuple[str, int] | None, child: int, status: int, children: int
) -> dict[str, object]:
    """Say how a worker ended (its child_exit line) and return how: the signal's name, or the exit code."""
    # A killed worker's tmpfs files stay, and stay charged: the cgroup is still full, and the next worker (or
    # this process) would be killed as it starts. The master cleans up after its worker first of all.
    removed = remove_own_files(settings.memory_dir) if settings.memory_dir else None
    kills = None if counted_at is None else oom_kill_count(*counted_at)
    how = how_it_ended(status)
    _say(
        event="child_exit",
        pid=child,
        **how,
        oom_kill=kills,
        **({} if removed is None else {"removed_files": removed}),
        container_survived=True,
        children=children,
        restart_in_ms=settings.interval_ms,
    )
    return how
