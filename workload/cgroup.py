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
    __slots__ = (
        "version",
        "path",
        "limit_bytes",
        "limit_path",
        "high_bytes",
        "high_path",
        "oom_group",
        "swap_bytes",
    )

    def __init__(
        self,
        version: int,
        path: str,
        limit_bytes: int | None,
        limit_path: str,
        high_bytes: int | None = None,
        high_path: str | None = None,
        oom_group: int | None = None,
        swap_bytes: int | None = None,
    ) -> None:
        self.version = version  # 1 or 2
        self.path = path  # the process's own cgroup directory
        self.limit_bytes = limit_bytes  # the effective limit, the smallest along the ancestors; None if none
        self.limit_path = limit_path  # the directory whose limit binds (the own cgroup when there is none)
        self.high_bytes = high_bytes  # v2: the smallest memory.high along the ancestors, where below the limit
        self.high_path = high_path  # ... and the directory that sets it
        self.oom_group = oom_group  # v2: 1 when one OOM kills every process of the group together; v1: None
        self.swap_bytes = swap_bytes  # the swap this cgroup may use, where swap is on and allowed; else None

    def usage_bytes(self) -> int | None:
        """What the binding cgroup is charged now; None where the file cannot be read."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return _read_int(os.path.join(self.limit_path, name))

    def memory_stat(self) -> dict[str, int]:
        """anon, file, shmem, inactive_file bytes of the binding cgroup (v1: its hierarchical total_* keys)."""
        return parse_memory_stat(_read_text(os.path.join(self.limit_path, "memory.stat")) or "", self.version)

    def events(self) -> tuple[int | None, int | None]:
        """v2 memory.events (high, max): times the charge went over memory.high and hit memory.max."""
        if self.version != 2:
            return None, None
        high = _keyed(os.path.join(self.high_path or self.limit_path, "memory.events")).get("high")
        return high, _keyed(os.path.join(self.limit_path, "memory.events")).get("max")

    def pressure(self) -> tuple[float | None, float | None]:
        """v2 memory.pressure avg10 (some, full) of the process's own cgroup; None where PSI is off or absent."""
        if self.version != 2:
            return None, None
        return parse_pressure(_read_text(os.path.join(self.path, "memory.pressure")) or "")

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


def _levels_above(mount_root: str) -> int | None:
    """How many levels above the cgroup namespace's root a mount's root lies ("/../.." is 2); None if not so."""
    parts = mount_root.strip("/").split("/")
    return len(parts) if all(part == ".." for part in parts) else None


def _find_by_pid(top: str, levels: int, cgroup_path: str, pid: int) -> str | None:
    """The directory, `levels` unknown names below top and then cgroup_path, whose cgroup.procs lists pid."""
    candidates = [top]
    for _ in range(levels):
        below: list[str] = []
        for directory in candidates:
            try:
                below.extend(entry.path for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False))
            except OSError:
                continue
        candidates = below
    for directory in candidates:
        own = os.path.normpath(os.path.join(directory, cgroup_path.lstrip("/")))
        if str(pid) in (_read_text(os.path.join(own, "cgroup.procs")) or "").split():
            return own
    return None


def locate(root: str, mounts: list[Mount], cgroup_path: str, pid: int | None = None) -> tuple[str, str] | None:
    """(the cgroup's directory, the mount point's directory) for a cgroup path, through the mounts given.

    In a container without a cgroup namespace, /proc/self/cgroup names the host's path (/docker/<id>) while
    the mount shows that very cgroup at its root: the mount's root field is what maps one onto the other.
    In a cgroup namespace that kept a mount made outside it, the mount's root shows as "/../.." (that many
    levels above the namespace's root, names unknown): the process's cgroup is the one, that far below the
    mount point, whose cgroup.procs lists the process. Where neither works (a cgroup namespace whose root was
    moved), the mount point itself is the best view of the process's cgroup there is.
    """
    best: tuple[int, str, str] | None = None
    for mount in mounts:
        relative = _relative_to_mount(cgroup_path, mount.root)
        levels = _levels_above(mount.root)
        if relative is None and levels is not None and not cgroup_path.startswith("/.."):
            top = _inside(root, mount.mount_point)
            found = _find_by_pid(top, levels, cgroup_path, os.getpid() if pid is None else pid)
            if found is not None:
                return found, top
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


def _keyed(path: str) -> dict[str, int]:
    """A flat keyed file ("key value" lines: memory.events, memory.stat) as a dict; empty where unreadable."""
    values = {}
    for line in (_read_text(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.isdigit():
            values[key] = int(value)
    return values


# What each version's memory.stat calls the counters the step line reports. v1's total_* keys count the whole
# subtree, as its usage does; v1 "cache" and v2 "file" both include shmem.
_STAT_KEYS = {
    1: {"total_rss": "anon", "total_cache": "file", "total_shmem": "shmem", "total_inactive_file": "inactive_file"},
    2: {
        "anon": "anon",
        "file": "file",
        "shmem": "shmem",
        "inactive_file": "inactive_file",
        "slab_reclaimable": "slab_reclaimable",  # v2 only: v1 counts kernel memory in its usage without a split
    },
}


def parse_memory_stat(text: str, version: int) -> dict[str, int]:
    """anon, file, shmem and inactive_file bytes (and v2's slab_reclaimable) from a memory.stat text of cgroup v1
    or v2."""
    names = _STAT_KEYS[version]
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        name = names.get(key)
        if name is not None and value.isdigit():
            found[name] = int(value)
    return found


def parse_pressure(text: str) -> tuple[float | None, float | None]:
    """avg10 of the "some" and "full" lines of a PSI file (memory.pressure)."""
    some = full = None
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if rest.startswith("avg10="):
            try:
                value = float(rest[6:].split(" ", 1)[0])
            except ValueError:
                continue
            if kind == "some":
                some = value
            elif kind == "full":
                full = value
    return some, full


def _v2_value(directory: str, name: str) -> int | None:
    """A v2 limit file (memory.max, memory.high, memory.swap.max): bytes, or None for "max" and when absent."""
    text = _read_text(os.path.join(directory, name))
    if text is None or text.strip() == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _swap_total_bytes(root: str) -> int:
    meminfo = _read_text(os.path.join(root, "proc/meminfo")) or ""
    for line in meminfo.splitlines():
        if line.startswith("SwapTotal:"):
            fields = line.split()
            return int(fields[1]) * 1024 if len(fields) > 1 and fields[1].isdigit() else 0
    return 0


def _v1_swap(directory: str, limit: int | None, swap_total: int) -> int | None:
    """The swap a v1 cgroup may use: memory+swap limit minus memory limit, none where swappiness is 0."""
    if swap_total == 0 or _read_int(os.path.join(directory, "memory.swappiness")) == 0:
        return None
    stat = parse_memory_stat_v1_limits(_read_text(os.path.join(directory, "memory.stat")) or "")
    memsw = stat.get("hierarchical_memsw_limit")
    if memsw is None or memsw >= V1_UNLIMITED_FROM or limit is None:
        return swap_total
    return min(swap_total, memsw - limit) or None


def parse_memory_stat_v1_limits(text: str) -> dict[str, int]:
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key.startswith("hierarchical_") and value.strip().isdigit():
            found[key] = int(value)
    return found


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
    return _v2_value(directory, "memory.max")


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


def _v2_oom_group(chain: list[str], limit_path: str) -> int | None:
    """1 where the kernel kills the whole group: memory.oom.group set on the own cgroup or on an ancestor up to
    the one whose limit binds (the kernel takes the highest such cgroup below the OOM's own)."""
    values = []
    for directory in chain:
        values.append(_read_int(os.path.join(directory, "memory.oom.group")))
        if directory == limit_path:
            break
    if values[0] is None:
        return None
    return 1 if any(value == 1 for value in values) else 0


def _v2_swap(chain: list[str], swap_total: int) -> int | None:
    """The swap a v2 cgroup may use: the smallest memory.swap.max up the tree, at most the swap that is on."""
    if swap_total == 0:
        return None
    allowed = swap_total
    for directory in chain:
        text = _read_text(os.path.join(directory, "memory.swap.max"))
        if text is not None and text.strip() != "max" and text.strip().isdigit():
            allowed = min(allowed, int(text))
    return allowed or None


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
            swap = _v1_swap(own, limit, _swap_total_bytes(root))
            return MemoryCgroup(1, own, limit, where, swap_bytes=swap)

    v2_mounts = [m for m in mounts if m.fstype == "cgroup2"]
    if v2_path is not None and v2_mounts:
        located = locate(root, v2_mounts, v2_path)
        if located is not None:
            own, top = located
            chain = _ancestors(own, top)
            limit, where = _tightest([(_v2_limit(d), d) for d in chain], own)
            high, high_where = _tightest([(_v2_value(d, "memory.high"), d) for d in chain], own)
            if high is None or (limit is not None and high >= limit):
                high, high_where = None, own
            return MemoryCgroup(
                2,
                own,
                limit,
                where,
                high_bytes=high,
                high_path=high_where if high is not None else None,
                oom_group=_v2_oom_group(chain, where),
                swap_bytes=_v2_swap(chain, _swap_total_bytes(root)),
            )
    return None


def oom_kill_count(cgroup_dir: str, version: int) -> int | None:
    """How many processes the kernel has OOM-killed in this cgroup (v1 memory.oom_control, v2 memory.events)."""
    text = _read_text(os.path.join(cgroup_dir, "memory.oom_control" if version == 1 else "memory.events"))
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None
