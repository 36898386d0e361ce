"""make verify's pure parts: arguments, the prediction's window, the checks and the JUnit report."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oomtools import verdict, verify
from oomtools.alert_client import Access, AlertRecord
from oomtools.arguments import Parser
from oomtools.verify import judge, observe, report
from oomtools.verify.observe import BackOff, record_pods
from workload import logfmt
from workload.predict import KillRange


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("90s", 90), ("1h30m", 5400), ("45", 45)])
def test_durations_read_as_kubectl_and_prometheus_write_them(text: str, seconds: float) -> None:
    assert verify.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "argv",
    [
        ["--timeout", "soon"],
        ["--timeout", "0"],
        ["--alert", "ContainerOOMKilled"],
        ["--kills", "0"],
        ["--prometheus", "http://p", "--alert", "Nope"],
        ["--no-such-flag"],
    ],
)
def test_bad_arguments_are_exit_2_in_one_line(argv: list[str]) -> None:
    err = io.StringIO()
    assert verify.main(argv, out=io.StringIO(), err=err) == verify.EXIT_BAD_ARGUMENTS
    assert len(err.getvalue().strip().splitlines()) == 1


def test_a_kill_is_on_time_within_the_predicted_window_and_its_slack() -> None:
    prediction = verify.Prediction(kills=True, supervised=False, earliest=7, latest=7, replicas=1)
    assert prediction.on_time(6)
    assert prediction.on_time(12)
    assert not prediction.on_time(5.5)
    assert not prediction.on_time(12.5)
    # Past 10 s the slack is half the latest: a kill predicted by 20 s is on time up to 30 s, and not after.
    slow = verify.Prediction(kills=True, supervised=False, earliest=16, latest=20, replicas=1)
    assert slow.on_time(30)
    assert not slow.on_time(30.5)


def test_the_alerts_expected_follow_the_process_model() -> None:
    single = verify.Prediction(True, False, 7, 7, 1).alerts_expected()
    supervised = verify.Prediction(True, True, 7, 7, 1).alerts_expected()
    held = verify.Prediction(False, False, None, None, 1).alerts_expected()
    assert [name for name, fires in single.items() if fires] == ["ContainerOOMKilled", "ContainerCrashLooping"]
    assert [name for name, fires in supervised.items() if fires] == ["ContainerOOMKillWithoutRestart"]
    assert not any(held.values())


def test_a_hogs_start_is_its_start_line_over_its_supervisors_and_none_before_either() -> None:
    supervisor = "event=supervisor_start pid=1 process_model=supervised oom_group=1"
    worker = "event=start pid=7 limit_mib=128 cgroup=v2:/kubepods.slice/cri-containerd-c.scope oom_group=1"
    later = "event=start pid=9 limit_mib=128 cgroup=v2:/elsewhere oom_group=0"
    step = "event=step step=1 allocated_mib=16"
    assert observe.hog_start([supervisor, worker, step, later]) == {
        "event": "start",
        "pid": "7",
        "process_model": "supervised",
        "oom_group": "1",
        "limit_mib": "128",
        "cgroup": "v2:/kubepods.slice/cri-containerd-c.scope",
    }
    assert observe.hog_start([supervisor, step]) == logfmt.parse(supervisor)  # its worker's line not logged yet
    assert observe.hog_start([worker, supervisor]) == logfmt.parse(worker)  # a single hog's: no supervisor's
    assert observe.hog_start([step, "event=started x=1", "event=supervisor_started"]) is None
    # The watch keeps a pod's first, and a fuller one where only the supervisor's was read before.
    observed = verify.Observed()
    stamp = "2026-11-30T12:00:00Z "
    assert not observe.record_start(observed, "p", stamp + step)
    assert observe.record_start(observed, "p", stamp + supervisor)
    assert observed.starts["p"]["event"] == "supervisor_start"
    assert not observe.record_start(observed, "p", f"{stamp}{supervisor}\n{stamp}{worker}\n")
    assert observed.starts["p"]["cgroup"] == "v2:/kubepods.slice/cri-containerd-c.scope"
    assert not observe.record_start(observed, "p", stamp + later)
    assert observed.starts["p"]["pid"] == "7"


def test_an_expected_alert_that_never_fired_fails_the_verdict_and_the_junit_report(tmp_path: Path) -> None:
    prediction = verify.Prediction(True, False, 7, 7, 1)
    records = [AlertRecord("ContainerOOMKilled", expected=True), AlertRecord("ContainerOOMKillWithoutRestart", False)]
    checks = verify.checks_for(prediction, verify.Observed(), 2, records)
    failed = {check.name for check in checks if not check.ok}
    assert "alert ContainerOOMKilled fires" in failed
    assert "alert ContainerOOMKillWithoutRestart stays quiet" not in failed
    assert "2 OOM kills (OOMKilled, exit code 137)" in failed
    report = tmp_path / "verify.xml"
    verify.write_junit(report, judge.verdict(checks), 1.0)
    suite = ET.parse(report).getroot()  # noqa: S314 (the report this test had written)
    assert suite.get("failures") == str(len(failed))
    assert suite.get("tests") == str(len(checks))


def oom_death(last_step: int | None, container_id: str) -> verify.Death:
    started = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)
    message = "" if last_step is None else f"event=step step={last_step} allocated_mib={16 * last_step}"
    return verify.Death(
        "pod", "oom-killer", container_id, "OOMKilled", 137, message, started,
        started + datetime.timedelta(seconds=7), 0,
    )  # fmt: skip


def test_each_kill_is_held_to_the_steps_the_stack_announced_and_the_check_says_where() -> None:
    steps = KillRange(7, 8, 8, 1000)
    prediction = verify.Prediction(True, False, 6, 8, 1, steps)
    observed = verify.Observed()
    observed.deaths = {"a": oom_death(6, "a"), "b": oom_death(7, "b")}  # killed in steps 7 and 8
    (check,) = [c for c in verify.checks_for(prediction, observed, 2, []) if c.name == "each kill in an announced step"]
    assert check.ok
    assert check.detail == "predicted_steps=7..8 seen=7(1/2),8(2/2)"
    # A kill in step 5 (the termination message names step 4) was not announced: the check fails.
    observed.deaths["c"] = oom_death(4, "c")
    (check,) = [c for c in verify.checks_for(prediction, observed, 2, []) if c.name == "each kill in an announced step"]
    assert not check.ok
    assert "5(early)" in check.detail
    # No message (killed before its first step line): step 1.
    assert prediction.kill_step(oom_death(None, "d").message) == 1


def test_a_tmpfs_runs_restart_killed_at_start_is_as_predicted_and_only_there() -> None:
    # On a node, the emptyDir keeps the killed run's files and their charge in the pod's cgroup: the restart is killed
    # before its first step (no step line), or got far enough to remove them and is killed as a first run is.
    outputs = {
        "predictedSecondsToOomKill": {"earliest": 6, "latest": 8},
        "predictedOomKillStep": {"earliest": 7, "latest": 8},
    }
    tmpfs = verify.predict(outputs, 1, {"MEMORY_KIND": "tmpfs"})
    observed = verify.Observed()
    observed.deaths = {"a": oom_death(6, "a"), "b": oom_death(None, "b"), "c": oom_death(None, "c")}
    checks = {c.name: c for c in verify.checks_for(tmpfs, observed, 2, [])}
    assert checks["each kill in an announced step"].ok
    assert checks["each kill in an announced step"].detail == "predicted_steps=7..8 seen=7(1/2) killed_at_start=2"
    assert checks["each kill on time"].ok
    # A kill at start is not as predicted for the heap, nor for a supervised tmpfs worker (its PID 1 removes the files).
    for env in ({"MEMORY_KIND": "anonymous"}, {"MEMORY_KIND": "tmpfs", "PROCESS_MODEL": "supervised"}):
        prediction = verify.predict(outputs, 1, env)
        assert not prediction.restarts_into_full_pod
    heap = {c.name: c for c in verify.checks_for(verify.predict(outputs, 1, {}), observed, 2, [])}
    assert not heap["each kill in an announced step"].ok
    # A tmpfs run killed out of its announced steps still fails: only "no step line at all" is taken as at start.
    observed.deaths["d"] = oom_death(3, "d")
    assert not {c.name: c for c in verify.checks_for(tmpfs, observed, 2, [])}["each kill in an announced step"].ok


OUTPUTS = {
    "namespace": "oom-killer",
    "deploymentName": "oom-killer",
    "workloadKind": "Deployment",
    "workloadName": "oom-killer",
    "predictedSecondsToOomKill": None,
}


def test_outputs_are_read_from_a_file_or_inline_json(tmp_path: Path) -> None:
    # Inline: what a machine without the Pulumi CLI has at hand, e.g. `--outputs "$(oom-killer render --outputs)"`.
    inline = json.dumps(OUTPUTS)
    assert verify.stack_outputs("dev", inline) == OUTPUTS
    assert verify.stack_outputs("dev", "  " + inline) == OUTPUTS
    saved = tmp_path / "outputs.json"
    saved.write_text(inline)
    assert verify.stack_outputs("dev", str(saved)) == OUTPUTS
    # A stack deployed before workloadKind and workloadName were exported: its Deployment, by deploymentName.
    older = {key: value for key, value in OUTPUTS.items() if key not in ("workloadKind", "workloadName")}
    assert verify.stack_outputs("dev", json.dumps(older)) == OUTPUTS
    # scope=node: a DaemonSet, and no deploymentName.
    node = {**older, "workloadKind": "DaemonSet", "workloadName": "oom-killer"}
    del node["deploymentName"]
    assert verify.stack_outputs("dev", json.dumps(node))["workloadKind"] == "DaemonSet"


@pytest.mark.parametrize(
    ("outputs", "says"),
    [
        ("{namespace: oom-killer}", "the stack's outputs (--outputs) are not JSON: "),
        ("/no/such/outputs.json", "--outputs /no/such/outputs.json: No such file or directory (a file, or the JSON"),
        ('{"namespace": "oom-killer"}', "stack dev has no namespace and workloadName outputs"),
        ("{}", "--outputs: no outputs in it; give what `pulumi stack output --json` prints for a deployed stack"),
        (
            '{"namespace": "n", "workloadName": "w", "workloadKind": "StatefulSet"}',
            "stack dev's workloadKind 'StatefulSet': not one of Deployment, DaemonSet",
        ),
    ],
)
def test_bad_outputs_are_exit_2_in_one_line_saying_which(outputs: str, says: str) -> None:
    err = io.StringIO()
    assert verify.main(["--outputs", outputs], out=io.StringIO(), err=err) == verify.EXIT_BAD_ARGUMENTS
    (line,) = err.getvalue().splitlines()
    assert line.startswith(f"verify: {says}"), line


def test_a_stack_whose_first_up_never_ended_is_exit_2_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `pulumi stack output --json` prints before the stack's first pulumi up has ended (make e2e, test_faults).
    pulumi = tmp_path / "pulumi"
    pulumi.write_text("#!/bin/sh\necho '{}'\n")
    pulumi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    err = io.StringIO()
    assert verify.main(["--stack", "dev"], out=io.StringIO(), err=err) == verify.EXIT_BAD_ARGUMENTS
    assert err.getvalue() == (
        "verify: stack dev has no outputs: it was never deployed, or its first pulumi up did not finish; "
        "run make up (pulumi up)\n"
    )


def test_the_help_shows_each_default_and_every_exit_code() -> None:
    text = verify.configure(Parser(prog="oom-killer verify")).format_help()
    options = " ".join(text[text.index("options:") : text.index("exit codes:")].split())
    for default in ("--stack STACK the Pulumi stack whose outputs say what to watch (default: dev)", "(default: 10m)"):
        assert default in options
    assert "OOM kills to see before the verdict (default: 2)" in options
    assert "(default: None)" not in options  # an option without a default says nothing of one
    assert set(verify.CODE_MEANINGS) == {v for name, v in vars(verify).items() if name.startswith("EXIT_")}
    listed = text[text.index("exit codes:") :]
    for code in verify.CODE_MEANINGS:
        assert f"\n  {code} " in listed, code


def test_the_default_timeout_is_ten_minutes() -> None:
    assert verify.parse_args([]).timeout == 600.0


def test_prometheus_behind_auth_gets_the_token_from_a_file_and_the_ca_bundle(tmp_path: Path) -> None:
    token, ca = tmp_path / "prometheus.token", tmp_path / "ca.pem"
    secret = "a-service-account-token"  # noqa: S105 (a stand-in, written to the file verify reads)
    token.write_text(f"{secret}\n")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    url = ["--prometheus", "https://prometheus.example.com"]
    args = verify.parse_args([*url, "--prometheus-token-file", str(token), "--prometheus-ca-file", str(ca)])
    assert verify.prometheus_access(args) == Access(bearer_token=secret, ca_file=ca)
    insecure = verify.parse_args([*url, "--prometheus-insecure-skip-verify"])
    assert verify.prometheus_access(insecure) == Access(insecure_skip_verify=True)
    assert verify.prometheus_access(verify.parse_args(url)) == Access()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--prometheus-token-file", "t"], "verify: --prometheus-token-file needs --prometheus"),
        (["--prometheus-insecure-skip-verify"], "verify: --prometheus-insecure-skip-verify needs --prometheus"),
        (["--prometheus", "https://p", "--prometheus-ca-file", "ca.pem", "--prometheus-insecure-skip-verify"],
         "verify: --prometheus-ca-file and --prometheus-insecure-skip-verify: check the certificate or not"),
        (["--prometheus", "https://p", "--prometheus-token-file", "/no/such.token"],
         "verify: --prometheus-token-file /no/such.token: No such file or directory"),
        (["--prometheus", "https://p", "--prometheus-ca-file", "/no/ca.pem"],
         "verify: --prometheus-ca-file /no/ca.pem: no such file"),
    ],
)  # fmt: skip
def test_bad_prometheus_access_is_exit_2_in_one_line_before_anything_is_asked(argv: list[str], says: str) -> None:
    err = io.StringIO()
    assert verify.main([*argv, "--outputs", "/no/such/outputs.json"], out=io.StringIO(), err=err) == 2
    assert err.getvalue().splitlines() == [says]


# ---------------------------------------------------------------------------------------------------------------
# A judge with nothing to judge says so (issue 28): never all([]).


def test_an_item_over_nothing_checked_nothing_and_never_rolls_up_to_a_pass() -> None:
    passed, failed = verdict.check("a", True, ""), verdict.check("b", False, "")
    skipped = verdict.Item("node c", verdict.SKIPPED)
    assert verdict.over("each kill", [], "").status == verdict.NOTHING_CHECKED
    assert verdict.over("nodes", [skipped, skipped], "").status == verdict.NOTHING_CHECKED
    assert verdict.over("nodes", [skipped, passed], "").status == verdict.PASSED
    assert verdict.over("nodes", [passed, failed], "").status == verdict.FAILED
    nothing = verdict.over("each kill on time", [], "")
    assert not nothing.ok
    assert verdict.rollup("run", [passed, nothing]).status == verdict.NOTHING_CHECKED
    assert verdict.rollup("run", [nothing, failed]).status == verdict.FAILED  # a failure says more
    assert verdict.rollup("run", [skipped]).status == verdict.NOTHING_CHECKED
    assert verdict.rollup("run", []).status == verdict.NOTHING_CHECKED
    assert verdict.rollup("run", [passed, skipped]).status == verdict.PASSED


TMPFS_OUTPUTS = {
    "predictedSecondsToOomKill": {"earliest": 6, "latest": 8},
    "predictedOomKillStep": {"earliest": 7, "latest": 8},
}


def test_a_tmpfs_stack_whose_every_kill_came_at_start_checked_nothing_and_says_why() -> None:
    # The watch began after the pod's first run (the one that steps): every kill it saw was a restart killed at start.
    tmpfs = verify.predict(TMPFS_OUTPUTS, 1, {"MEMORY_KIND": "tmpfs"})
    observed = verify.Observed()
    observed.deaths = {"b": oom_death(None, "b"), "c": oom_death(None, "c")}
    observed.back_offs = {"b": BackOff("pod", "oom-killer", 10.0, 1)}
    checks = verify.checks_for(tmpfs, observed, 2, [])
    by_name = {c.name: c for c in checks}
    for name in ("each kill in an announced step", "each kill on time"):
        assert by_name[name].status == verdict.NOTHING_CHECKED
        assert by_name[name].children == []
        assert "killed_at_start=2: no kill came after a step" in by_name[name].detail
    tree = judge.verdict(checks)
    assert tree.status == verdict.NOTHING_CHECKED
    line = logfmt.parse(report.verdict_line(tree, observed, [], 9.0))
    assert line["verdict"] == "nothing-checked"
    assert "each kill on time (predicted=6..8s seen= killed_at_start=2" in line["failed"]


def test_a_tmpfs_pods_first_run_killed_before_its_first_step_was_killed_early_not_at_start() -> None:
    # Nothing filled the pod before its first run: no step line means the limit left it no room, not a full pod.
    tmpfs = verify.predict(TMPFS_OUTPUTS, 1, {"MEMORY_KIND": "tmpfs"})
    first = dataclasses.replace(oom_death(None, "a"), first_run=True)
    observed = verify.Observed()
    observed.deaths = {"a": first, "b": oom_death(None, "b")}
    checks = {c.name: c for c in verify.checks_for(tmpfs, observed, 2, [])}
    steps = checks["each kill in an announced step"]
    assert steps.status == verdict.FAILED
    assert steps.detail == "predicted_steps=7..8 seen=1(early) killed_at_start=1"
    assert judge.verdict(list(checks.values())).status == verdict.FAILED


def pod_status(container_id: str, restarts: int, running: bool, last: Any = None, state_end: Any = None) -> Any:
    started = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)
    state = SimpleNamespace(running=SimpleNamespace(started_at=started) if running else None, terminated=state_end)
    return SimpleNamespace(
        name="oom-killer", restart_count=restarts, state=state, last_state=last, container_id=container_id or None
    )


def ended(container_id: str) -> Any:
    started = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)
    end = SimpleNamespace(
        container_id=container_id, reason="OOMKilled", exit_code=137, message="", started_at=started,
        finished_at=started + datetime.timedelta(seconds=1),
    )  # fmt: skip
    return SimpleNamespace(running=None, terminated=end)


def listing(*statuses: Any) -> list[Any]:
    return [
        SimpleNamespace(
            metadata=SimpleNamespace(name="p"),
            spec=SimpleNamespace(node_name="n", affinity=None),
            status=SimpleNamespace(conditions=[], container_statuses=list(statuses)),
        )
    ]


def test_a_death_is_its_pods_first_run_only_where_verify_knows_it() -> None:
    # Seen running with no restart, then dead: the first run.
    observed = verify.Observed()
    record_pods(observed, listing(pod_status("c1", 0, running=True)), lambda _: None)
    record_pods(observed, listing(pod_status("", 1, running=False, last=ended("c1"))), lambda _: None)
    assert observed.deaths["c1"].first_run
    # Dead before any restart (the terminated state itself, restart count 0): the first run too.
    observed = verify.Observed()
    record_pods(observed, listing(pod_status("", 0, running=False, state_end=ended("c1").terminated)), lambda _: None)
    assert observed.deaths["c1"].first_run
    # First seen in its fourth run: the death before it (its last state) is a restart's.
    observed = verify.Observed()
    record_pods(observed, listing(pod_status("c4", 3, running=True, last=ended("c3"))), lambda _: None)
    record_pods(observed, listing(pod_status("", 4, running=False, last=ended("c4"))), lambda _: None)
    assert not observed.deaths["c3"].first_run
    assert not observed.deaths["c4"].first_run


def test_a_pods_start_line_is_read_from_its_ended_containers_log_until_its_hogs_own_is_read() -> None:
    # A container killed between two polls: its hog's start line is in the log the kubelet keeps of it (previous).
    supervisor = "2026-11-30T12:00:00Z event=supervisor_start process_model=supervised oom_group=1"
    worker = "2026-11-30T12:00:00Z event=start limit_mib=128 cgroup=v2:/c oom_group=1 swap_max_mib=64"
    logs = {"supervised": f"{supervisor}\n{worker}\n", "single": worker.replace(" oom_group=1", "") + "\n"}
    reads: list[tuple[str, dict[str, Any]]] = []

    def read_namespaced_pod_log(name: str, namespace: str, _request_timeout: float, **how: Any) -> str:
        assert namespace == "ns"
        reads.append((name, how))
        return logs[name]

    core = SimpleNamespace(read_namespaced_pod_log=read_namespaced_pod_log)
    ended = SimpleNamespace(terminated=SimpleNamespace(container_id="containerd://c1"))

    def pod(name: str) -> Any:
        status = SimpleNamespace(name="oom-killer", last_state=ended)
        return SimpleNamespace(metadata=SimpleNamespace(name=name), status=SimpleNamespace(container_statuses=[status]))

    outputs = {"predictedSecondsToOomKill": {"earliest": 6, "latest": 8}}
    env = {"MEMORY_INCREMENT_MB": "16"}
    for name, model, said in (
        # and the seconds it moves the kill to (6..8 s, 64 MiB of 16 MiB steps at the default 1 s: 9..13)
        ("supervised", "supervised", {"oom_group": "1", "supervised_end": "group-kill", "swap_mib": 64}),
        ("single", "single", {"swap_mib": 64}),
    ):
        said = {**said, "predicted_seconds": "9..13"}
        prediction = verify.predict(outputs, 1, {**env, "PROCESS_MODEL": model})
        observed = verify.Observed()
        if model == "supervised":  # its supervisor's line read while it ran, its worker's not yet
            observed.starts[name] = logfmt.parse(supervisor.partition(" ")[2])
        events: list[observe.Event | observe.AlertState] = []
        observe.read_ended_starts(core, "ns", observed, prediction, [pod(name)], events.append)
        assert observed.hog_started(name)
        assert observed.starts[name]["swap_max_mib"] == "64"
        assert events == [observe.Event("hog_start", {"pod": name, **said})]
        assert reads[-1] == (name, {"container": "oom-killer", "previous": True, "timestamps": True})
        # Read once: no log is asked for again.
        count = len(reads)
        observe.read_ended_starts(core, "ns", observed, prediction, [pod(name)], events.append)
        assert len(reads) == count
        assert len(events) == 1
