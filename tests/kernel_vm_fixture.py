"""The cgroup v2 VM's `vm` fixture, one boot for every module that judges it (a pytest plugin: each such module
names it in `pytest_plugins`, so pytest registers it once and the boot is shared across modules).

Each module keeps its own `LAYOUTS`; the first test that asks for `vm` boots the kernel once with the layouts of
every module in the session that uses `vm` (their names must be unique across modules), in module order: two
modules cost one boot, not two. Run one module alone and only its
layouts boot.

Under pytest-repeat (`--count=N`, as `make soak` runs these tests) repetition k of each test judges boot k: N runs
are N boots, each of all the layouts, so what changes from boot to boot (the charge at the interpreter's start
has moved between boots) is sampled, not N readings of one boot's results.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.kernel_vm import Boot, VmUnavailable, boot, missing_tools
from tests.support import require

# The parameter pytest-repeat gives each repetition of a test (0 to N-1); absent without --count.
REPEAT_PARAMETER = "__pytest_repeat_step_number"


def boot_or_skip(layouts: list[dict[str, Any]], work: Path) -> Boot:
    """Boot the VM with these layouts; skip (fail in CI) where this machine cannot make or boot it."""
    require(os.geteuid() == 0, "making the VM's root with debootstrap needs root")
    missing = missing_tools()
    require(not missing, f"missing {', '.join(missing)} (Debian: apt-get install qemu-system-x86 cpio debootstrap)")
    try:
        booted = boot(layouts, work)
    except VmUnavailable as error:
        require(False, str(error))
        raise
    assert booted.output.startswith("oom-killer-vm-kernel 6."), booted.output[:2000] + booted.console[-3000:]
    print(f"kernel VM: {len(layouts)} layouts in one boot, {booted.seconds:.1f}s")
    return booted


def session_layouts(session: pytest.Session) -> list[dict[str, Any]]:
    """The LAYOUTS of every module with a selected test that uses `vm`, in collection order; names unique."""
    modules: list[Any] = []
    for item in session.items:
        module = getattr(item, "module", None)
        if "vm" in getattr(item, "fixturenames", ()) and hasattr(module, "LAYOUTS") and module not in modules:
            modules.append(module)
    layouts = [layout for module in modules for layout in module.LAYOUTS]
    owners: dict[str, str] = {}
    for module in modules:
        for layout in module.LAYOUTS:
            name = str(layout["name"])
            assert name not in owners, f"layout {name!r} is in {owners[name]} and {module.__name__}: names must differ"
            owners[name] = module.__name__
    return layouts


class Boots:
    """One boot per repetition, made when a test of that repetition first asks for it, then kept for the rest.
    The first is started as soon as the session is collected, in a thread beside the tests that come before the
    VM's (QEMU takes one core of two): by the time the v2 tests run, their results are usually in."""

    def __init__(self, layouts: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> None:
        self.layouts = layouts
        self.tmp_path_factory = tmp_path_factory
        # A boot that failed or skipped fails or skips the rest of its repetition's tests without booting again,
        # as a module-scoped fixture's error would.
        self.by_repetition: dict[int, Boot | BaseException] = {}
        self.early: threading.Thread | None = None

    def start_early(self) -> None:
        """Boot repetition 0 in the background now; get(0) waits for it."""
        work = self.tmp_path_factory.mktemp("vm-1")

        def run() -> None:
            try:
                self.by_repetition[0] = boot_or_skip(self.layouts, work)
            except BaseException as error:  # a skip or a failure: get(0) raises it in the test that asks
                self.by_repetition[0] = error

        self.early = threading.Thread(target=run, name="kernel-vm-boot", daemon=True)
        self.early.start()

    def get(self, repetition: int) -> Boot:
        if repetition == 0 and self.early is not None:
            self.early.join()
        if repetition not in self.by_repetition:
            work = self.tmp_path_factory.mktemp(f"vm-{repetition + 1}")
            try:
                self.by_repetition[repetition] = boot_or_skip(self.layouts, work)
            except BaseException as error:  # pytest's skip and fail outcomes are BaseExceptions
                self.by_repetition[repetition] = error
                raise
        booted = self.by_repetition[repetition]
        if isinstance(booted, BaseException):
            raise booted
        return booted


_BOOTS = pytest.StashKey[Boots]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once the session knows its tests: where any judges the VM, start its first boot (see Boots)."""
    layouts = session_layouts(session)
    if layouts:
        boots = Boots(layouts, session.config._tmp_path_factory)  # type: ignore[attr-defined]
        session.stash[_BOOTS] = boots
        boots.start_early()


@pytest.fixture(scope="session")
def kernel_v2_boots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Boots:
    started = request.session.stash.get(_BOOTS, None)
    return started if started is not None else Boots(session_layouts(request.session), tmp_path_factory)


@pytest.fixture
def vm(kernel_v2_boots: Boots, request: pytest.FixtureRequest) -> Boot:
    """What the VM's driver reported for every layout, from the boot of this test's repetition (the only one
    without pytest-repeat)."""
    callspec = getattr(request.node, "callspec", None)
    repetition = int(callspec.params.get(REPEAT_PARAMETER, 0)) if callspec else 0
    return kernel_v2_boots.get(repetition)
