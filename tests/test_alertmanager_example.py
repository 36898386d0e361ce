"""alerts/alertmanager.example.yaml, the documented Alertmanager route and inhibit rule: Alertmanager's own amtool
accepts it and routes each alert where its comments say (the lab's namespace to its own receiver, memory kills
elsewhere to theirs, the rest to the default); its inhibit rule mutes kube-prometheus' KubePodCrashLooping with the
labels ContainerCrashLooping's alerts carry, and ContainerCrashLooping fires first."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from infra.monitoring import rule_groups
from tests.support import PROJECT, tool_on_path

EXAMPLE = PROJECT / "alerts" / "alertmanager.example.yaml"
KUBE_POD_CRASH_LOOPING_FOR_MINUTES = 15  # kubernetes-mixin's KubePodCrashLooping, as kube-prometheus-stack ships it


def amtool() -> str:
    return tool_on_path("amtool", "prometheus-alertmanager")


def test_amtool_accepts_the_example() -> None:
    result = subprocess.run([amtool(), "check-config", str(EXAMPLE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "ContainerOOMKilled", "namespace": "oom-killer"}, "oom-killer-lab"),
        ({"alertname": "ContainerOOMKillWithoutRestart", "namespace": "oom-killer"}, "oom-killer-lab"),
        ({"alertname": "KubePodCrashLooping", "namespace": "oom-killer"}, "oom-killer-lab"),
        ({"alertname": "ContainerOOMKilled", "namespace": "shop"}, "memory-kills"),
        ({"alertname": "ContainerOOMKillWithoutRestart", "namespace": "workers"}, "memory-kills"),
        ({"alertname": "ContainerCrashLooping", "namespace": "shop"}, "default"),
        ({"alertname": "ContainerOOMKilled", "namespace": "oom-killer-staging"}, "oom-killer-lab"),
        ({"alertname": "ContainerOOMKilled", "namespace": "oom-killers"}, "memory-kills"),
    ],
)
def test_each_alert_goes_to_the_receiver_the_comments_say(labels: dict[str, str], receiver: str) -> None:
    result = subprocess.run(
        [
            amtool(),
            "config",
            "routes",
            "test",
            f"--config.file={EXAMPLE}",
            f"--verify.receivers={receiver}",
            *(f"{key}={value}" for key, value in {**labels, "severity": "warning"}.items()),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_routing_check_can_fail() -> None:
    result = subprocess.run(
        [amtool(), "config", "routes", "test", f"--config.file={EXAMPLE}", "--verify.receivers=oom-killer-lab",
         "alertname=ContainerOOMKilled", "namespace=shop"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0


def test_the_inhibit_rule_mutes_kube_pod_crash_looping_by_labels_container_crash_looping_carries() -> None:
    (inhibit,) = yaml.safe_load(EXAMPLE.read_text())["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="ContainerCrashLooping"']
    assert inhibit["target_matchers"] == ['alertname="KubePodCrashLooping"']
    (rule,) = [r for r in rule_groups()[0]["rules"] if r["alert"] == "ContainerCrashLooping"]
    by = re.search(r"max by \(([^)]*)\)", rule["expr"])
    assert by is not None
    carried = {label.strip() for label in by.group(1).split(",")}
    assert set(inhibit["equal"]) == carried == {"namespace", "pod", "container"}
    # the source must fire before the target for the mute to hold from the target's first notification
    assert re.fullmatch(r"\d+m", rule["for"])
    assert int(rule["for"][:-1]) < KUBE_POD_CRASH_LOOPING_FOR_MINUTES
