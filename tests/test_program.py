"""The Pulumi program under Pulumi's own mocks: what `pulumi up` would declare, for the shipped dev stack and
for other configs, and that a bad config declares nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pulumi
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pulumi.runtime import rpc

from infra.image import context_tag
from infra.kube import predicted_oom_kill_step, predicted_seconds_to_oom_kill, workload_env
from infra.settings import (
    DEFAULTS,
    ConfigError,
    StackSettings,
    load_settings,
)
from infra.table import MAX_MIB, MIN_LIMIT_MIB, step_room_mib
from oomtools import render as render_module
from oomtools.render import Rendered, render, stack_config
from tests.support import PROJECT, require
from workload.kinds import BASELINE_MAX_MIB, BASELINE_MIN_MIB
from workload.memory import MIB
from workload.predict import STARTUP_SECONDS_MAX, predict_kill
from workload.settings import MAX_CEILING_MIB, SettingsError, parse_settings

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NAMESPACE = "kubernetes:core/v1:Namespace"
LIMIT_RANGE = "kubernetes:core/v1:LimitRange"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
IMAGE = "docker:index/image:Image"
SCHEMA = PROJECT.parent / "shared" / "schemas" / "pulumi-project.schema.json"


def container(rendered: Rendered) -> dict[str, Any]:
    pod = rendered.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return dict(only)


def env_of(rendered: Rendered) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(rendered)["env"]}


def load_settings_for(config: dict[str, str]) -> StackSettings:
    """The settings load_settings() reads from this config, without running the program."""
    pulumi.runtime.set_all_config({f"oom-killer:{k}": v for k, v in config.items()})
    return load_settings()


@pytest.fixture(scope="module")
def dev() -> Rendered:
    return render(stack_config("dev"))


def test_the_dev_stack_declares_an_image_a_namespace_a_limit_range_a_network_policy_and_a_deployment(
    dev: Rendered,
) -> None:
    assert sorted(r.type for r in dev.resources) == sorted([IMAGE, NAMESPACE, LIMIT_RANGE, NETWORK_POLICY, DEPLOYMENT])
    config = stack_config("dev")
    limit = f"{config['memoryLimitMb']}Mi"
    assert env_of(dev) == {
        "MEMORY_INCREMENT_MB": config["memoryIncrementMb"],
        "INCREMENT_INTERVAL_MS": config["incrementIntervalMs"],
        "TERMINATION_MESSAGE_PATH": "/dev/termination-log",
    }
    resources = container(dev)["resources"]
    assert resources["requests"] == resources["limits"]
    assert resources["limits"]["memory"] == limit
    assert dev.exports["memoryLimit"] == limit


def test_the_dev_image_is_built_locally_and_run_by_its_content_tag(dev: Rendered) -> None:
    image = dev.one(IMAGE).inputs
    assert image["skipPush"] is True
    # No platform named: the engine builds for its own, the platform of the local cluster that shares it.
    assert "platform" not in image["build"]
    assert Path(image["build"]["dockerfile"]) == PROJECT / "Dockerfile"
    tag = context_tag(load_settings_for({}))
    assert image["imageName"] == f"oom-killer:{tag}"
    assert container(dev)["image"] == f"oom-killer:{tag}"
    assert container(dev)["imagePullPolicy"] == "IfNotPresent"
    assert dev.exports["image"] == f"oom-killer:{tag}"


def test_the_pod_is_locked_down_to_pod_security_restricted(dev: Rendered) -> None:
    pod = dev.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]
    security = container(dev)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert isinstance(security["runAsUser"], int)
    assert security["runAsUser"] > 0
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] <= 10
    assert container(dev)["terminationMessagePath"] == "/dev/termination-log"
    labels = dev.one(NAMESPACE).inputs["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["app.kubernetes.io/name"] == "oom-killer"


def test_pulumi_up_does_not_wait_for_a_pod_built_to_crash(dev: Rendered) -> None:
    assert dev.one(DEPLOYMENT).inputs["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}


def test_one_label_set_serves_selector_template_and_objects(dev: Rendered) -> None:
    spec = dev.one(DEPLOYMENT).inputs["spec"]
    labels = spec["selector"]["matchLabels"]
    assert spec["template"]["metadata"]["labels"] == labels
    for kind in (LIMIT_RANGE, NETWORK_POLICY, DEPLOYMENT):
        assert dev.one(kind).inputs["metadata"]["labels"] == labels
    assert labels["app.kubernetes.io/instance"] == "dev"


def test_the_limit_range_caps_every_container_at_the_limit_and_comes_first(dev: Rendered) -> None:
    (item,) = dev.one(LIMIT_RANGE).inputs["spec"]["limits"]
    limit = f"{stack_config('dev')['memoryLimitMb']}Mi"
    assert item == {
        "type": "Container",
        "default": {"memory": limit},
        "defaultRequest": {"memory": limit},
        "max": {"memory": limit},
    }
    assert "limit-range" in dev.dependencies["deployment"]
    assert "deny-all" in dev.dependencies["deployment"]


def test_everything_lives_in_the_configured_namespace(dev: Rendered) -> None:
    assert dev.one(NAMESPACE).inputs["metadata"]["name"] == "oom-killer"
    for kind in (LIMIT_RANGE, NETWORK_POLICY, DEPLOYMENT):
        assert dev.one(kind).inputs["metadata"]["namespace"] == "oom-killer"
    assert "namespace" in dev.dependencies["deployment"]


def test_the_network_policy_denies_all_traffic_to_every_pod(dev: Rendered) -> None:
    spec = dev.one(NETWORK_POLICY).inputs["spec"]
    assert spec["podSelector"] == {}
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in spec
    assert "egress" not in spec


def test_exports_say_where_it_runs_when_it_dies_and_how_to_watch(dev: Rendered) -> None:
    assert dev.exports["namespace"] == "oom-killer"
    assert dev.exports["deploymentName"] == "oom-killer"
    # dev: 128 MiB, 16 MiB a second, 3 to 16 MiB charged before the first step (up to 13 of it page cache the kernel
    # takes back): killed in step 7 or 8, 6 s in at the earliest, 7 s and the interpreter's start-up at the latest.
    assert dev.exports["predictedOomKillStep"] == {"earliest": 7, "latest": 8}
    assert dev.exports["predictedSecondsToOomKill"] == {"earliest": 6.0, "latest": 8.0}
    commands = dev.exports["kubectl"]
    assert commands["watchPods"].startswith("kubectl get pods --namespace oom-killer ")
    assert commands["watchPods"].endswith(" --watch")
    assert "lastState.terminated.reason" in commands["lastTerminationReason"]
    assert commands["describePod"].startswith("kubectl describe pods --namespace oom-killer ")


def test_other_values_land_in_the_right_fields() -> None:
    rendered = render(
        {
            "memoryLimitMb": "512",
            "memoryIncrementMb": "30",
            "incrementIntervalMs": "250",
            "memoryCeilingMb": "400",
            "replicas": "3",
            "cpuMillicores": "250",
            "namespace": "oom-lab",
        },
        stack_name="staging",
    )
    spec = rendered.one(DEPLOYMENT).inputs["spec"]
    assert spec["replicas"] == 3
    assert env_of(rendered) == {
        "MEMORY_INCREMENT_MB": "30",
        "INCREMENT_INTERVAL_MS": "250",
        "MEMORY_CEILING_MB": "400",
        "TERMINATION_MESSAGE_PATH": "/dev/termination-log",
    }
    assert container(rendered)["resources"]["limits"] == {"memory": "512Mi", "cpu": "250m"}
    assert rendered.one(LIMIT_RANGE).inputs["spec"]["limits"][0]["max"] == {"memory": "512Mi"}
    assert rendered.one(NAMESPACE).inputs["metadata"]["name"] == "oom-lab"
    assert rendered.one(DEPLOYMENT).inputs["metadata"]["namespace"] == "oom-lab"
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "staging"
    assert rendered.exports["kubectl"]["watchPods"].startswith("kubectl get pods --namespace oom-lab ")
    # A ceiling below the limit: it holds, and no kill is predicted.
    assert rendered.exports["predictedSecondsToOomKill"] is None
    assert rendered.exports["predictedOomKillStep"] is None


def test_defaults_apply_when_the_stack_sets_nothing() -> None:
    rendered = render({})
    assert env_of(rendered)["MEMORY_INCREMENT_MB"] == "10"
    assert env_of(rendered)["INCREMENT_INTERVAL_MS"] == "1000"
    assert container(rendered)["resources"]["limits"] == {"memory": "256Mi", "cpu": "100m"}
    assert rendered.one(DEPLOYMENT).inputs["spec"]["replicas"] == 1


def test_a_prebuilt_image_is_run_as_given_and_nothing_is_built() -> None:
    rendered = render({"image": "registry.example.com/team/oom-killer:1.2.3"})
    assert rendered.of_type(IMAGE) == []
    assert container(rendered)["image"] == "registry.example.com/team/oom-killer:1.2.3"


def test_a_pushed_image_is_run_by_its_digest_so_a_rebuild_rolls_out() -> None:
    rendered = render({"imageRepository": "ghcr.io/acme/oom-killer", "platform": "linux/arm64"})
    image = rendered.one(IMAGE).inputs
    assert image.get("skipPush") is not True
    assert image["imageName"].startswith("ghcr.io/acme/oom-killer:")
    assert image["build"]["platform"] == "linux/arm64"
    # No credentials configured: the server alone, so the provider pushes with what `docker login` stored for it.
    assert image["registry"] == {"server": "ghcr.io"}
    reference = container(rendered)["image"]
    assert reference.startswith("ghcr.io/acme/oom-killer@sha256:")
    assert rendered.exports["image"] == reference


def test_the_registry_server_is_the_repository_host_or_docker_hub() -> None:
    def server(repository: str) -> str:
        return str(
            render({"imageRepository": repository, "platform": "linux/amd64"}).one(IMAGE).inputs["registry"]["server"]
        )

    assert server("localhost:5001/oom-killer") == "localhost:5001"
    assert server("123456789012.dkr.ecr.eu-west-1.amazonaws.com/oom-killer") == (
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    )
    assert server("acme/oom-killer") == "docker.io"


def test_registry_credentials_come_from_config_with_the_password_a_secret() -> None:
    rendered = render(
        {
            "imageRepository": "registry.example.com:5000/oom-killer",
            "platform": "linux/amd64",
            "registryUsername": "robot",
            "registryPassword": "s3cret",
            "baseImage": "mirror.example.com/python:3.12-slim",
        },
        secrets=frozenset({"registryPassword"}),
    )
    image = rendered.one(IMAGE).inputs
    # The password's secrecy reaches the engine: the whole registry block arrives wrapped as a secret.
    registry = image["registry"]
    assert registry[rpc._special_sig_key] == rpc._special_secret_sig
    assert registry["value"] == {"server": "registry.example.com:5000", "username": "robot", "password": "s3cret"}
    assert image["build"]["args"] == {"BASE_IMAGE": "mirror.example.com/python:3.12-slim"}
    assert "s3cret" not in json.dumps(rendered.exports)


def assert_refused_and_nothing_declared(
    config: dict[str, str], key: str, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The program refuses this config in one line naming the key and value, and registers no resource."""
    # Spy on the mock engine itself: render() cannot hand back what was declared once the program has raised.
    registered: list[str] = []
    record = render_module._Recorder.new_resource

    def spy(self: Any, args: Any) -> Any:
        registered.append(args.typ)
        return record(self, args)

    monkeypatch.setattr(render_module._Recorder, "new_resource", spy)
    with pytest.raises(ConfigError) as caught:
        render(config)
    message = str(caught.value)
    assert message.startswith(f"invalid config oom-killer:{key}={shown}: ")
    assert "\n" not in message
    assert registered == []


@pytest.mark.parametrize(
    ("config", "key", "shown"),
    [
        ({"memoryIncrementMb": "0"}, "memoryIncrementMb", "0"),
        ({"memoryIncrementMb": "ten"}, "memoryIncrementMb", "'ten'"),
        ({"memoryLimitMb": "-1"}, "memoryLimitMb", "-1"),
        ({"memoryLimitMb": "1.5"}, "memoryLimitMb", "'1.5'"),
        ({"memoryLimitMb": "64", "memoryIncrementMb": "64"}, "memoryIncrementMb", "64"),
        # The case: 20 MiB with 16 MiB steps was killed before its first step.
        ({"memoryLimitMb": "20", "memoryIncrementMb": "16"}, "memoryIncrementMb", "16"),
        ({"memoryLimitMb": "32", "memoryIncrementMb": "17"}, "memoryIncrementMb", "17"),
        # Docker refuses a limit under 6 MiB; and the interpreter needs up to 16 MiB of it.
        ({"memoryLimitMb": "4", "memoryIncrementMb": "1"}, "memoryLimitMb", "4"),
        ({"memoryLimitMb": "16", "memoryIncrementMb": "1"}, "memoryLimitMb", "16"),
        ({"memoryLimitMb": str(MAX_MIB + 1)}, "memoryLimitMb", str(MAX_MIB + 1)),
        # A ceiling must leave room for the baseline, so that it surely holds: the 120 under 128 held only
        # because the baseline happened to be 5 MiB.
        ({"memoryLimitMb": "128", "memoryCeilingMb": "120"}, "memoryCeilingMb", "120"),
        ({"memoryLimitMb": "128", "memoryCeilingMb": "128"}, "memoryCeilingMb", "128"),
        ({"memoryLimitMb": "128", "memoryCeilingMb": "113"}, "memoryCeilingMb", "113"),
        ({"memoryCeilingMb": str(MAX_CEILING_MIB + 1)}, "memoryCeilingMb", str(MAX_CEILING_MIB + 1)),
        ({"incrementIntervalMs": "-5"}, "incrementIntervalMs", "-5"),
        ({"memoryCeilingMb": "-1"}, "memoryCeilingMb", "-1"),
        ({"cpuMillicores": "0"}, "cpuMillicores", "0"),
        ({"replicas": "-1"}, "replicas", "-1"),
        ({"replicas": "many"}, "replicas", "'many'"),
        ({"namespace": "Oom_Killer"}, "namespace", "'Oom_Killer'"),
        ({"namespace": "x" * 64}, "namespace", "'" + "x" * 64 + "'"),
        ({"namespace": "default"}, "namespace", "'default'"),
        ({"namespace": "kube-system"}, "namespace", "'kube-system'"),
        ({"platform": "amd64"}, "platform", "'amd64'"),
        ({"imageRepository": "ghcr.io/a/b"}, "platform", "''"),
        # Keys Pulumi.yaml does not declare: the typo, and one that is no typo at all.
        ({"memoryIncremntMb": "30"}, "memoryIncremntMb", "'30'"),
        ({"foo": "bar", "memoryIncrementMb": "30"}, "foo", "'bar'"),
        ({"image": "a:1", "imageRepository": "ghcr.io/a/b"}, "image", "'a:1'"),
        ({"imageRepository": "ghcr.io/acme/oom-killer:latest"}, "imageRepository", "'ghcr.io/acme/oom-killer:latest'"),
        ({"image": "oom killer"}, "image", "'oom killer'"),
        (
            {"imageRepository": "ghcr.io/a/b", "platform": "linux/amd64", "registryUsername": "robot"},
            "registryUsername",
            "'robot'",
        ),
        ({"registryUsername": "robot", "registryPassword": "x"}, "registryPassword", "'[plaintext]'"),
    ],
)
def test_a_bad_config_is_refused_naming_key_and_value_and_declares_nothing(
    config: dict[str, str], key: str, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_refused_and_nothing_declared(config, key, shown, monkeypatch)


def test_pulumi_yaml_passes_the_engine_schema() -> None:
    require(SCHEMA.exists(), f"the engine's schema is not at {SCHEMA} (shared/ beside the project)")
    project = yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())
    jsonschema.validate(project, json.loads(SCHEMA.read_text()))
    assert project["name"] == "oom-killer"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}


def test_pulumi_yaml_declares_every_key_with_the_defaults_in_code() -> None:
    declared = yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == set(DEFAULTS)
    for key, declaration in declared.items():
        assert declaration["default"] == DEFAULTS[key], key
        default = DEFAULTS[key]
        expected_type = "boolean" if isinstance(default, bool) else "integer" if isinstance(default, int) else "string"
        assert declaration["type"] == expected_type, key
        assert declaration["description"].strip(), key
        assert "secret" not in declaration, f"{key}: a secret with a default breaks `pulumi up` since Pulumi 3.202"


def test_the_dev_stack_file_sets_only_declared_keys() -> None:
    declared = yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())["config"]
    assert set(stack_config("dev")) <= set(declared)


def test_the_image_tag_follows_the_build_context_and_nothing_else(tmp_path: Path) -> None:
    copy = tmp_path / "project"
    shutil.copytree(PROJECT / "workload", copy / "workload", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy(PROJECT / name, copy / name)
    settings = load_settings_for({})
    original = context_tag(settings, copy)
    assert context_tag(settings, PROJECT) == original
    (copy / "README.md").write_text("not in the image")
    assert context_tag(settings, copy) == original
    with (copy / "workload" / "main.py").open("a") as main:
        main.write("\n# changed\n")
    changed = context_tag(settings, copy)
    assert changed != original
    assert context_tag(load_settings_for({"platform": "linux/arm64"}), copy) != changed


def test_every_key_pulumi_yaml_declares_is_accepted_and_no_other() -> None:
    declared = yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())["config"]
    every_key = {key: str(declaration["default"]) for key, declaration in declared.items()}
    rendered = render(every_key)  # all declared keys at once, at their declared defaults: nothing refused
    assert rendered.one(DEPLOYMENT)
    with pytest.raises(ConfigError, match=r"^invalid config oom-killer:memoryIncremntMb='30': is not a setting"):
        render({**every_key, "memoryIncremntMb": "30"})


def test_an_unknown_key_from_the_engine_is_refused_and_other_namespaces_are_not_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The engine hands a program its config in PULUMI_CONFIG, not through set_all_config as the mocks do.
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"kubernetes:context": "kind-kind", "docker:host": "unix:///x"}))
    assert render({}).one(DEPLOYMENT)
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"oom-killer:replica": "2", "kubernetes:context": "kind-kind"}))
    with pytest.raises(ConfigError, match=r"^invalid config oom-killer:replica='2': is not a setting"):
        render({})


def test_an_unknown_secret_key_is_refused_without_showing_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        render({"registryPasswd": "s3cret"}, secrets=frozenset({"registryPasswd"}))
    assert str(caught.value).startswith("invalid config oom-killer:registryPasswd='[secret]': is not a setting")
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"oom-killer:registryPasswd": "s3cret"}))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(["oom-killer:registryPasswd"]))
    with pytest.raises(ConfigError) as caught:
        render({})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("stack", "namespace"),
    [("staging", "oom-killer-staging"), ("dev", "oom-killer-dev"), ("Team_EU.prod", "oom-killer-team-eu-prod")],
)
def test_each_stack_gets_a_namespace_of_its_own_unless_it_names_one(stack: str, namespace: str) -> None:
    assert render({}, stack_name=stack).one(NAMESPACE).inputs["metadata"]["name"] == namespace
    assert render({"namespace": "oom-lab"}, stack_name=stack).one(NAMESPACE).inputs["metadata"]["name"] == "oom-lab"


def test_the_dev_stack_keeps_the_namespace_the_readme_names(dev: Rendered) -> None:
    assert stack_config("dev")["namespace"] == "oom-killer"
    assert dev.exports["namespace"] == "oom-killer"


def test_a_pushed_build_needs_its_platform_named_and_a_local_one_takes_the_engines() -> None:
    with pytest.raises(ConfigError, match=r"^invalid config oom-killer:platform='': must name your nodes' os/arch"):
        render({"imageRepository": "ghcr.io/acme/oom-killer"})
    pushed = render({"imageRepository": "ghcr.io/acme/oom-killer", "platform": "linux/amd64"})
    assert pushed.one(IMAGE).inputs["build"]["platform"] == "linux/amd64"
    # Named for a local build too, it is honoured (an arm64 kind node fed by an amd64 engine, say).
    assert render({"platform": "linux/arm64"}).one(IMAGE).inputs["build"]["platform"] == "linux/arm64"


def test_the_prediction_is_a_range_where_the_baseline_decides_the_step() -> None:
    # 256 MiB at 10 MiB a second: after a 16 MiB baseline that all stays, and the kernel's own growth, the kill
    # comes in step 24; after 3 MiB in step 26 (and the interpreter's start-up before the first step).
    exports = render({"memoryLimitMb": "256", "memoryIncrementMb": "10"}).exports
    assert exports["predictedOomKillStep"] == {"earliest": 24, "latest": 26}
    assert exports["predictedSecondsToOomKill"] == {"earliest": 23.0, "latest": 26.0}


@given(
    limit=st.integers(min_value=MIN_LIMIT_MIB, max_value=4096),
    increment=st.integers(min_value=1, max_value=4096),
    interval=st.integers(min_value=0, max_value=10_000),
    baseline_kib=st.integers(min_value=BASELINE_MIN_MIB * 1024, max_value=BASELINE_MAX_MIB * 1024),
)
def test_the_predicted_range_holds_the_kill_for_any_baseline_in_the_measured_range(
    limit: int, increment: int, interval: int, baseline_kib: int
) -> None:
    config = {"memoryLimitMb": limit, "memoryIncrementMb": increment, "incrementIntervalMs": interval}
    if increment > step_room_mib(limit, "single"):
        with pytest.raises(ConfigError, match=r"^invalid config oom-killer:memoryIncrementMb="):
            load_settings_for({key: str(value) for key, value in config.items()})
        return
    settings = load_settings_for({key: str(value) for key, value in config.items()})
    predicted = predicted_seconds_to_oom_kill(settings)
    steps = predicted_oom_kill_step(settings)
    # Whatever a node charges at start, and whatever of it the kernel takes back, the hog's own announcement
    # lies inside the stack's.
    for reclaimable_kib in (0, max(baseline_kib - BASELINE_MIN_MIB * 1024, 0)):
        kill = predict_kill(limit * MIB, baseline_kib * 1024, increment, interval, None, 0, reclaimable_kib * 1024)
        assert predicted is not None
        assert steps is not None
        assert kill is not None
        assert steps["earliest"] <= kill.earliest <= kill.latest <= steps["latest"]
        assert predicted["earliest"] <= kill.seconds(kill.earliest)
        assert kill.seconds(kill.latest) + STARTUP_SECONDS_MAX <= predicted["latest"]
        assert kill.expected >= 2  # the rule leaves room for a whole first step, whatever the baseline


@given(
    limit=st.integers(min_value=MIN_LIMIT_MIB, max_value=4096),
    ceiling=st.integers(min_value=1, max_value=4096),
    baseline_kib=st.integers(min_value=BASELINE_MIN_MIB * 1024, max_value=BASELINE_MAX_MIB * 1024),
)
def test_an_accepted_ceiling_holds_whatever_the_baseline(limit: int, ceiling: int, baseline_kib: int) -> None:
    config = {"memoryLimitMb": str(limit), "memoryIncrementMb": "1", "memoryCeilingMb": str(ceiling)}
    if ceiling > limit - BASELINE_MAX_MIB:
        with pytest.raises(ConfigError, match=r"^invalid config oom-killer:memoryCeilingMb="):
            load_settings_for(config)
        return
    settings = load_settings_for(config)
    assert predicted_seconds_to_oom_kill(settings) is None
    assert predicted_oom_kill_step(settings) is None
    assert predict_kill(limit * MIB, baseline_kib * 1024, 1, 0, ceiling) is None


@given(
    limit=st.integers(min_value=2 * BASELINE_MAX_MIB + 2, max_value=4096),  # room for a step of either model
    pct=st.integers(min_value=1, max_value=99),
    model=st.sampled_from(["single", "supervised"]),
)
def test_an_accepted_ceiling_in_percent_predicts_no_kill_and_reaches_the_workload_as_the_same_percent(
    limit: int, pct: int, model: str
) -> None:
    config = {
        "memoryLimitMb": str(limit),
        "memoryIncrementMb": "1",
        "memoryCeilingPct": str(pct),
        "processModel": model,
    }
    baseline = 2 * BASELINE_MAX_MIB if model == "supervised" else BASELINE_MAX_MIB
    if limit * pct <= baseline * 100:  # within the interpreters' own charge: it would hold having allocated nothing
        with pytest.raises(ConfigError, match=r"^invalid config oom-killer:memoryCeilingPct="):
            load_settings_for(config)
        return
    settings = load_settings_for(config)
    assert predicted_seconds_to_oom_kill(settings) is None
    assert predicted_oom_kill_step(settings) is None
    env = workload_env(settings)
    assert env["MEMORY_CEILING_PCT"] == str(pct)
    assert "MEMORY_CEILING_MB" not in env
    assert parse_settings(env).ceiling_pct == pct


def test_a_ceiling_in_percent_of_0_sends_nothing_and_one_sends_the_percent() -> None:
    assert "MEMORY_CEILING_PCT" not in env_of(render({"memoryCeilingPct": "0"}))
    assert env_of(render({"memoryCeilingPct": "90"}))["MEMORY_CEILING_PCT"] == "90"


def test_ceiling_zero_and_the_ceiling_bound_mean_the_same_to_the_stack_and_the_workload() -> None:
    # 0 is "no ceiling" on both sides: the stack sends no variable, and the workload reads 0 as none.
    assert "MEMORY_CEILING_MB" not in env_of(render({"memoryCeilingMb": "0"}))
    assert parse_settings({"MEMORY_CEILING_MB": "0"}).ceiling_mib is None
    # One upper bound: the largest ceiling the stack accepts the workload accepts, and one past the bound neither.
    largest = load_settings_for({"memoryLimitMb": str(MAX_MIB), "memoryCeilingMb": str(MAX_MIB - BASELINE_MAX_MIB)})
    assert parse_settings({"MEMORY_CEILING_MB": str(largest.memory_ceiling_mb)}).ceiling_mib == MAX_MIB - 16
    assert MAX_MIB == MAX_CEILING_MIB
    with pytest.raises(SettingsError):
        parse_settings({"MEMORY_CEILING_MB": str(MAX_CEILING_MIB + 1)})
    with pytest.raises(ConfigError):
        load_settings_for({"memoryLimitMb": str(MAX_MIB + 1), "memoryCeilingMb": str(MAX_CEILING_MIB + 1)})
