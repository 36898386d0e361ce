"""The workload's settings, read from the environment and validated before anything is allocated."""

from __future__ import annotations

from workload.kinds import MEMORY_KINDS, PROCESS_MODELS, memory_kind

DEFAULT_INCREMENT_MIB = 10
DEFAULT_INTERVAL_MS = 1000
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# Bounds that keep a typo from turning into an absurd request: a step or a ceiling larger than 1 TiB, or a pause
# longer than a day, is never what anyone meant. The stack's settings use the same bound.
MAX_INCREMENT_MIB = 1024 * 1024
MAX_CEILING_MIB = 1024 * 1024
MAX_INTERVAL_MS = 24 * 60 * 60 * 1000
# A ceiling in percent of the memory limit: 100 is the kill itself, so at most 99.
MAX_CEILING_PCT = 99


class SettingsError(ValueError):
    """A variable holds a value the workload cannot use."""

    def __init__(self, variable: str, value: str, reason: str) -> None:
        super().__init__(f"{variable}={value!r}: {reason}")
        self.variable = variable
        self.value = value
        self.reason = reason


class Settings:
    """What the environment asked for. A plain class, not a dataclass or NamedTuple: importing `dataclasses` or
    `typing` would add megabytes to the baseline RSS that the start line reports."""

    __slots__ = (
        "increment_mib",
        "interval_ms",
        "ceiling_mib",
        "ceiling_pct",
        "allow_unlimited",
        "termination_message_path",
        "memory_kind",
        "memory_dir",
        "process_model",
        "pod_limit_mib",
    )

    def __init__(
        self,
        increment_mib: int = DEFAULT_INCREMENT_MIB,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        ceiling_mib: int | None = None,
        allow_unlimited: bool = False,
        termination_message_path: str = DEFAULT_TERMINATION_MESSAGE_PATH,
        memory_kind: str = "anonymous",
        memory_dir: str = "",
        process_model: str = "single",
        ceiling_pct: int | None = None,
        pod_limit_mib: int | None = None,
    ) -> None:
        self.increment_mib = increment_mib
        self.interval_ms = interval_ms
        self.ceiling_mib = ceiling_mib
        # A percent of the memory limit the container's charge may reach: turned into ceiling_mib at the start, once
        # the limit and the interpreter's own charge are known (workload/main.py).
        self.ceiling_pct = ceiling_pct
        self.allow_unlimited = allow_unlimited
        self.termination_message_path = termination_message_path
        self.memory_kind = memory_kind
        self.memory_dir = memory_dir  # "" for anonymous memory
        self.process_model = process_model
        # The pod's memory limit where the limit is the pod's (limitScope=pod: the Downward API's limits.memory of a
        # container that has none of its own): the pod's cgroup holds it, and a cgroup namespace (v2) hides it.
        self.pod_limit_mib = pod_limit_mib

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Settings({fields})"


def _whole_number(env: dict[str, str], variable: str, lowest: int, highest: int, unit: str) -> int | None:
    """The variable as an integer in [lowest, highest], or None when it is unset or empty."""
    raw = env.get(variable, "")
    text = raw.strip()
    if not text:
        return None
    # ASCII digits only: int() would also take "1_000", "+5", " 5" and non-ASCII digits such as "٣".
    if not (text.isascii() and text.isdigit()):
        raise SettingsError(
            variable,
            raw,
            f"must be a whole number of {unit} from {lowest} to {highest}",
        )
    value = int(text)
    if not lowest <= value <= highest:
        raise SettingsError(variable, raw, f"must be from {lowest} to {highest} {unit}")
    return value


def parse_settings(env: dict[str, str]) -> Settings:
    """Build the settings from environment variables; raise SettingsError on the first bad one."""
    increment = _whole_number(env, "MEMORY_INCREMENT_MB", 1, MAX_INCREMENT_MIB, "MiB")
    interval = _whole_number(env, "INCREMENT_INTERVAL_MS", 0, MAX_INTERVAL_MS, "milliseconds")
    # 0 means no ceiling, as the stack's memoryCeilingMb=0 does.
    ceiling = _whole_number(env, "MEMORY_CEILING_MB", 0, MAX_CEILING_MIB, "MiB")
    # 0 means none here too; one ceiling or the other.
    ceiling_pct = _whole_number(env, "MEMORY_CEILING_PCT", 0, MAX_CEILING_PCT, "percent")
    if ceiling and ceiling_pct:
        raise SettingsError(
            "MEMORY_CEILING_PCT",
            env["MEMORY_CEILING_PCT"],
            "must not be set with MEMORY_CEILING_MB: give one ceiling, in MiB or in percent of the limit",
        )

    pod_limit = _whole_number(env, "POD_MEMORY_LIMIT_MB", 1, MAX_CEILING_MIB, "MiB")

    allow_raw = env.get("ALLOW_UNLIMITED", "")
    if allow_raw.strip() not in ("", "0", "1"):
        raise SettingsError(
            "ALLOW_UNLIMITED",
            allow_raw,
            "must be 1 (run even where no memory limit applies) or 0",
        )

    kind = _choice(env, "MEMORY_KIND", MEMORY_KINDS)
    model = _choice(env, "PROCESS_MODEL", PROCESS_MODELS)
    described = memory_kind(kind)
    memory_dir = env.get("MEMORY_DIR", "").strip() or described.default_dir
    if described.writes_files and not memory_dir:
        raise SettingsError("MEMORY_DIR", "", f"must name a directory on a disk filesystem for MEMORY_KIND={kind}")
    if memory_dir and not memory_dir.startswith("/"):
        raise SettingsError("MEMORY_DIR", memory_dir, "must be an absolute path")

    return Settings(
        increment_mib=DEFAULT_INCREMENT_MIB if increment is None else increment,
        interval_ms=DEFAULT_INTERVAL_MS if interval is None else interval,
        ceiling_mib=ceiling or None,
        ceiling_pct=ceiling_pct or None,
        allow_unlimited=allow_raw.strip() == "1",
        termination_message_path=env.get("TERMINATION_MESSAGE_PATH", "").strip() or DEFAULT_TERMINATION_MESSAGE_PATH,
        memory_kind=kind,
        memory_dir=memory_dir if described.writes_files else "",
        process_model=model,
        pod_limit_mib=pod_limit,
    )


def _choice(env: dict[str, str], variable: str, choices: tuple[str, ...]) -> str:
    """The variable's value, one of choices (the first when unset or empty)."""
    raw = env.get(variable, "")
    if raw.strip() and raw.strip() not in choices:
        raise SettingsError(variable, raw, f"must be one of {', '.join(choices)}")
    return raw.strip() or choices[0]
