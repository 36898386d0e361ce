"""Memory cgroups made for a test or a benchmark run, under the caller's own cgroup (v1 or v2).

The workload is started inside one the way a container runtime would start it: the process writes its own pid
into cgroup.procs, then execs the command, so nothing but the command is ever charged there.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from pathlib import Path

from workload.cgroup import discover, oom_kill_count
from workload.memory import MIB

_names = itertools.count()


class CgroupUnavailable(RuntimeError):
    """This machine, or this user, cannot make a memory cgroup."""


class MemoryCgroup:
    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, limit_mib: int | None) -> MemoryCgroup:
        """A fresh memory cgroup with this limit and no swap; raises CgroupUnavailable where none can be made."""
        own = discover()
        if own is None:
            raise CgroupUnavailable("no memory cgroup hierarchy is mounted (/proc/self/mountinfo)")
        name = f"oom-killer-test-{os.getpid()}-{next(_names)}"
        parents = [Path(own.path)]
        if own.version == 2:
            # v2 lets a cgroup with processes in it hand no controller to children: fall back to the top of the
            # hierarchy (the highest directory that is still a cgroup).
            top = Path(own.path)
            while (top.parent / "cgroup.controllers").exists():
                top = top.parent
            parents.append(top)
        problems = []
        for parent in parents:
            try:
                group = cls._make(parent / name, own.version)
            except OSError as error:
                problems.append(f"{parent}: {error}")
                continue
            if limit_mib is not None:
                group.set_limit(limit_mib)
            return group
        raise CgroupUnavailable(
            "cannot make a memory cgroup (needs root or a delegated cgroup): " + "; ".join(problems)
        )

    @classmethod
    def _make(cls, path: Path, version: int) -> MemoryCgroup:
        if version == 2:
            control = path.parent / "cgroup.subtree_control"
            if "memory" not in control.read_text().split():
                control.write_text("+memory")
        path.mkdir()
        group = cls(path, version)
        try:
            if version == 1:
                (path / "memory.swappiness").write_text("0")
            else:
                (path / "memory.swap.max").write_text("0")
        except FileNotFoundError:
            pass  # no swap accounting: then there is no swap to fall back on either
        return group

    def child(self, name: str, limit_mib: int | None) -> MemoryCgroup:
        """A cgroup below this one, as a container's below its pod's: its charge counts in this one's too, and
        stays there after the child is removed (an emptyDir's pages outlive the container that wrote them). None:
        no limit of its own (a container under a pod-level limit)."""
        group = self._make(self.path / name, self.version)
        if limit_mib is not None:
            group.set_limit(limit_mib)
        return group

    def set_limit(self, limit_mib: int) -> None:
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        (self.path / name).write_text(str(limit_mib * MIB))

    def popen(self, command: list[str], **kwargs: object) -> subprocess.Popen[str]:
        """Start command inside this cgroup (the shell joins it, then execs the command in its place)."""
        join_then_exec = 'echo $$ > "$1" && shift && exec "$@"'
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            ["sh", "-c", join_then_exec, "sh", str(self.path / "cgroup.procs"), *command],
            text=True,
            **kwargs,
        )

    def oom_kills(self) -> int:
        count = oom_kill_count(str(self.path), self.version)
        if count is None:
            raise AssertionError(f"no oom_kill counter in {self.path}")
        return count

    def usage_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int((self.path / name).read_text())

    def remove(self) -> None:
        """Remove the cgroup; its processes must have ended (the kernel may need a moment to let go)."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        self.path.rmdir()
