"""Finding the memory limit that really applies to this process, on cgroup v1 and v2.

Nothing here assumes a path: /proc/self/cgroup says which cgroup the process is in, /proc/self/mountinfo says
where (and from which root) that hierarchy is mounted, and the limit that binds is the smallest one on the
way from the process's cgroup up to the top of what the mount shows.  Every function takes a `root` so the
tests can point it at a fixture tree instead of the real /proc and /sys.
"""

from __future__ import annotations

import os

# The kernel writes "no limit" on cgroup v1 as PAGE_COUNTER_MAX pages (9223372036854771712 bytes with 4 KiB
# pages); anything this large is not a limit that a process will ever meet.
V1_UNLIMITED_FROM = 1 << 62


# Plain classes, not NamedTuple or pathlib: `typing` and `pathlib` would add megabytes to the baseline RSS.
class Mount:
    __slots__ = ("root", "mount_point", "fstype", "super_options")

    def __init__(self, root: str, mount_point: str, fstype: str, super_options: frozenset[str]) -> None:
        self.root = root  # the path, inside the hierarchy, that is visible at the mount point
        self.mount_point = mount_point
        self.fstype = fstype
        self.super_options = super_options


class MemoryCgroup:
    __slots__ = ("version", "path", "limit_bytes", "limit_path")

    def __init__(self, version: int, path: str, limit_bytes: int | None, limit_path: str) -> None:
        self.version = version  # 1 or 2
        self.path = path  # the process's own cgroup directory
        self.limit_bytes = limit_bytes  # the effective limit, the smallest along the ancestors; None if none
        self.limit_path = limit_path  # the directory whose limit binds (the own cgroup when there is none)

    def usage_bytes(self) -> int | None:
        """What the binding cgroup is charged now; None where the file cannot be read."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return _read_int(os.path.join(self.limit_path, name))

    def __repr__(self) -> str:
        return f"MemoryCgroup(v{self.version}, path={self.path!r}, limit={self.limit_bytes}, at={self.limit_path!r})"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 and so on).
    return field.encode().decode("unicode_escape") if "\\" in field else field


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of type cgroup and cgroup2 in a /proc/<pid>/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 4:
            continue
        fstype = fields[dash + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            Mount(
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=fstype,
                super_options=frozenset(fields[dash + 3].split(",")),
            )
        )
    return mounts


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """(v1 memory cgroup path, v2 cgroup path) from a /proc/<pid>/cgroup text; None where absent."""
    v1_memory = None
    unified = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if hierarchy_id == "0" and controllers == "":
            unified = path
        elif "memory" in controllers.split(","):
            v1_memory = path
    return v1_memory, unified


def _inside(root: str, absolute: str) -> str:
    return os.path.normpath(os.path.join(root, absolute.lstrip("/")))


def _relative_to_mount(cgroup_path: str, mount_root: str) -> str | None:
    """The cgroup path as seen below the mount, or None when the mount does not show that cgroup."""
    if mount_root == "/":
        return cgroup_path.lstrip("/")
    if cgroup_path == mount_root:
        return ""
    if cgroup_path.startswith(mount_root.rstrip("/") + "/"):
        return cgroup_path[len(mount_root.rstrip("/")) + 1 :]
    return None


def locate(root: str, mounts: list[Mount], cgroup_path: str) -> tuple[str, str] | None:
    """(the cgroup's directory, the mount point's directory) for a cgroup path, through the mounts given.

    In a container without a cgroup namespace, /proc/self/cgroup names the host's path (/docker/<id>) while
    the mount shows that very cgroup at its root: the mount's root field is what maps one onto the other.
    Where no mount's root is an ancestor of the path (a cgroup namespace whose root was moved), the mount
    point itself is the best view of the process's cgroup there is.
    """
    best: tuple[int, str, str] | None = None
    for mount in mounts:
        relative = _relative_to_mount(cgroup_path, mount.root)
        if relative is None:
            continue
        top = _inside(root, mount.mount_point)
        directory = os.path.normpath(os.path.join(top, relative)) if relative else top
        if os.path.isdir(directory) and (best is None or len(mount.root) > best[0]):
            best = (len(mount.root), directory, top)
    if best is not None:
        return best[1], best[2]
    for mount in mounts:
        top = _inside(root, mount.mount_point)
        if os.path.isdir(top):
            return top, top
    return None


def _read_text(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _v1_limit(directory: str) -> int | None:
    value = _read_int(os.path.join(directory, "memory.limit_in_bytes"))
    return value if value is not None and value < V1_UNLIMITED_FROM else None


def _v1_hierarchical_limit(directory: str) -> int | None:
    # The kernel's own answer, which includes ancestors the mount does not show.
    stat = _read_text(os.path.join(directory, "memory.stat")) or ""
    for line in stat.splitlines():
        key, _, value = line.partition(" ")
        if key == "hierarchical_memory_limit" and value.strip().isdigit():
            limit = int(value)
            return limit if limit < V1_UNLIMITED_FROM else None
    return None


def _v2_limit(directory: str) -> int | None:
    text = _read_text(os.path.join(directory, "memory.max"))
    if text is None or text.strip() == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _ancestors(directory: str, top: str) -> list[str]:
    """The directory and each parent up to and including the mount point, nearest first."""
    chain = [directory]
    while chain[-1] != top and chain[-1].startswith(top.rstrip("/") + "/"):
        chain.append(os.path.dirname(chain[-1]))
    return chain


def _tightest(limits: list[tuple[int | None, str]], own: str) -> tuple[int | None, str]:
    found = [(limit, path) for limit, path in limits if limit is not None]
    if not found:
        return None, own
    # The nearest one wins a tie: its usage is the one the limit is measured against.
    return min(found, key=lambda item: item[0])


def discover(root: str = "/") -> MemoryCgroup | None:
    """The memory cgroup of this process and its effective limit; None where there is no memory cgroup."""
    mountinfo = _read_text(os.path.join(root, "proc/self/mountinfo"))
    proc_cgroup = _read_text(os.path.join(root, "proc/self/cgroup"))
    if mountinfo is None or proc_cgroup is None:
        return None
    mounts = parse_mountinfo(mountinfo)
    v1_path, v2_path = parse_proc_cgroup(proc_cgroup)

    # A v1 memory hierarchy, where there is one, is where memory is accounted even on a hybrid host that also
    # mounts an empty cgroup2 hierarchy.
    v1_mounts = [m for m in mounts if m.fstype == "cgroup" and "memory" in m.super_options]
    if v1_path is not None and v1_mounts:
        located = locate(root, v1_mounts, v1_path)
        if located is not None:
            own, top = located
            limits = [(_v1_limit(d), d) for d in _ancestors(own, top)]
            limits.append((_v1_hierarchical_limit(own), own))
            limit, where = _tightest(limits, own)
            return MemoryCgroup(1, own, limit, where)

    v2_mounts = [m for m in mounts if m.fstype == "cgroup2"]
    if v2_path is not None and v2_mounts:
        located = locate(root, v2_mounts, v2_path)
        if located is not None:
            own, top = located
            limit, where = _tightest([(_v2_limit(d), d) for d in _ancestors(own, top)], own)
            return MemoryCgroup(2, own, limit, where)
    return None


def oom_kill_count(cgroup_dir: str, version: int) -> int | None:
    """How many processes the kernel has OOM-killed in this cgroup (v1 memory.oom_control, v2 memory.events)."""
    text = _read_text(os.path.join(cgroup_dir, "memory.oom_control" if version == 1 else "memory.events"))
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None
