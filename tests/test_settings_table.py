"""The settings' table (infra/table.py): each key written once, the files made from it current, its bounds and rules
the ones the program enforces, `--set` checked by it, and nothing of Pulumi needed to read it."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from infra.settings import DEFAULTS, ConfigError, load_settings
from infra.table import (
    MAX_MIB,
    MIN_LIMIT_MIB,
    ROWS,
    RULES,
    SETTINGS,
    Invalid,
    Toleration,
    default_namespace,
    parse_tolerations,
    step_room_mib,
)
from oomtools import config_files
from oomtools.arguments import UsageError, setting_names, stack_overrides
from oomtools.render import render
from workload.kinds import process_model
from workload.memory import MIB
from workload.predict import predict_kill


@pytest.fixture(autouse=True, scope="module")
def _mocks() -> None:
    render({})  # the mock engine, whose stack load_settings reads


def load(config: dict[str, str]) -> object:
    """The settings of this config; a password is given as `pulumi config set --secret` stores it."""
    secret = [f"oom-killer:{k}" for k in config if k == "registryPassword"]
    pulumi.runtime.set_all_config({f"oom-killer:{k}": v for k, v in config.items()}, secret)
    return load_settings()


def test_every_key_is_one_row_and_its_default_passes_its_own_checks() -> None:
    assert len(ROWS) == len(SETTINGS) == 26
    for row in ROWS:
        assert row.parse(None) == row.parse(row.default_text), row.key
        assert row.summary.strip(), row.key
        assert row.doc.strip(), row.key
    assert {row.key: row.default for row in ROWS} == DEFAULTS


@pytest.mark.parametrize("generated", [config_files.PULUMI_YAML, config_files.CONFIGURATION_DOC], ids=lambda p: p.name)
def test_the_files_made_from_the_table_are_current(generated: Path) -> None:
    assert config_files.stale(tuple(f for f in config_files.GENERATED if f[0] == generated)) == [], (
        f"{generated.name} is out of date with infra/table.py: run {config_files.REGENERATE}"
    )


def test_the_check_fails_on_a_stale_file_and_says_how_to_regenerate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "Pulumi.yaml"
    stale.write_text(config_files.PULUMI_YAML.read_text().replace("default: 256", "default: 512"))
    monkeypatch.setattr(config_files, "PROJECT_DIR", tmp_path)
    monkeypatch.setattr(config_files, "GENERATED", ((stale, config_files.pulumi_yaml),))
    err = io.StringIO()
    assert config_files.main(["--check"], err=err) == 1
    assert err.getvalue() == f"Pulumi.yaml is out of date with infra/table.py: run {config_files.REGENERATE}\n"
    assert config_files.main(["--write"], out=io.StringIO()) == 0
    assert config_files.main(["--check"], err=io.StringIO()) == 0
    assert yaml.safe_load(stale.read_text())["config"]["memoryLimitMb"]["default"] == 256


def test_pulumi_yaml_says_what_the_table_says() -> None:
    declared = yaml.safe_load(config_files.PULUMI_YAML.read_text())["config"]
    assert list(declared) == list(SETTINGS)
    for row in ROWS:
        assert declared[row.key] == {"type": row.type, "default": row.default, "description": row.summary}


@pytest.mark.parametrize("row", [row for row in ROWS if row.type == "integer"], ids=lambda row: row.key)
def test_each_integers_bounds_are_the_ones_the_program_enforces(row: object) -> None:
    assert isinstance(row, type(ROWS[0]))
    for outside in (row.lowest - 1, row.highest + 1):
        with pytest.raises(ConfigError) as caught:
            load({row.key: str(outside)})
        bounds = f"must be from {row.lowest} to {row.highest}{row.bounds_note}"
        assert str(caught.value) == f"invalid config oom-killer:{row.key}={outside}: {bounds}"
    assert row.parse(str(row.lowest)) == row.lowest
    assert row.parse(str(row.highest)) == row.highest


# One config that breaks each rule and nothing else: every rule can refuse.
BREAKS = {
    "a step leaves room for the interpreters": {"memoryLimitMb": "64", "memoryIncrementMb": "49"},
    "a ceiling leaves room for the interpreters": {"memoryLimitMb": "128", "memoryCeilingMb": "113"},
    "one ceiling, in MiB or in percent": {"memoryCeilingMb": "64", "memoryCeilingPct": "90"},
    "a ceiling in percent reaches past the interpreters": {"memoryLimitMb": "128", "memoryCeilingPct": "12"},
    "scope=node runs one pod per node": {"scope": "node", "replicas": "2"},
    "the namespace is the stack's own": {"namespace": "kube-system"},
    "a prebuilt image or a build to push": {"image": "a:1", "imageRepository": "ghcr.io/a/b"},
    "a pushed build names its platform": {"imageRepository": "ghcr.io/a/b"},
    "registry credentials go together": {
        "imageRepository": "ghcr.io/a/b",
        "platform": "linux/amd64",
        "registryUsername": "robot",
    },
    "registry credentials are for a push": {"registryUsername": "robot", "registryPassword": "secret"},
    "labels are for a declared PrometheusRule": {"prometheusRuleLabels": "release=x"},
    "VPA's maximum is for a declared VPA": {"vpaMaxMb": "512"},
    "VPA's maximum is at least the limit": {"memoryLimitMb": "128", "vpa": "Auto", "vpaMaxMb": "100"},
    "VPA sizes containers": {"vpa": "InPlaceOrRecreate", "limitScope": "pod"},
    "a request is at most the limit": {"memoryLimitMb": "128", "memoryRequestMb": "129"},
    "VPA sizes a hog whose request is its limit": {"memoryLimitMb": "128", "vpa": "Auto", "memoryRequestMb": "64"},
}


# The one line each says, as `pulumi up` and `--set` print it: the setting, its value, why, and what to do.
REFUSALS = {
    "a step leaves room for the interpreters": "memoryIncrementMb=49: must be at most 47: memoryLimitMb (64) less up "
    "to 16 MiB the interpreter takes and the step's page tables, or the container is killed in its first step",
    "a ceiling leaves room for the interpreters": "memoryCeilingMb=113: must be 0 (no ceiling) or at most 112: "
    "memoryLimitMb (128) less up to 16 MiB the interpreter takes, so that it surely holds there (for a kill, set 0)",
    "one ceiling, in MiB or in percent": "memoryCeilingPct=90: must be 0 while memoryCeilingMb is set (64): one "
    "ceiling, in MiB or in percent of the limit (`pulumi config rm memoryCeilingMb`)",
    "a ceiling in percent reaches past the interpreters": "memoryCeilingPct=12: must be 0 (none) or at least 13: "
    "12% of memoryLimitMb (128) is within the up to 16 MiB the interpreter takes before the first step, so it would "
    "hold having allocated nothing",
    "scope=node runs one pod per node": "replicas=2: must be 1 (or 0 to stop the pods) for scope=node: scope=node "
    "runs one pod per selected node",
    "the namespace is the stack's own": "namespace='kube-system': must be a namespace of its own: the stack creates "
    "it and `pulumi destroy` deletes it with all it holds",
    "a prebuilt image or a build to push": "image='a:1': is a prebuilt image, so nothing is built to push to "
    "imageRepository: set only one of the two",
    "a pushed build names its platform": "platform='': must name your nodes' os/arch for a pushed image, e.g. "
    "`pulumi config set platform linux/amd64` (kubectl get nodes -o "
    "jsonpath='{.items[*].status.nodeInfo.architecture}')",
    "registry credentials go together": "registryUsername='robot': and registryPassword go together: set both, or "
    "neither to use your docker login",
    "registry credentials are for a push": "registryUsername='robot': is only used to push to imageRepository, "
    "which is not set",
    "labels are for a declared PrometheusRule": "prometheusRuleLabels='release=x': label the PrometheusRule, which "
    "is not declared: `pulumi config set prometheusRule true`",
    "VPA's maximum is for a declared VPA": "vpaMaxMb=512: is VPA's maximum, and no VPA is declared: `pulumi config "
    "set vpa InPlaceOrRecreate` (or rm vpaMaxMb)",
    "VPA's maximum is at least the limit": "vpaMaxMb=100: must be 0 (4 times the limit) or at least memoryLimitMb "
    "(128): a VPA held under the hog's own limit could only shrink it",
    "VPA sizes containers": "vpa='InPlaceOrRecreate': needs limitScope=container: VPA recommends and applies per "
    "container, and the pod's limit would bind",
    "a request is at most the limit": "memoryRequestMb=129: must be 0 (the limit) or at most memoryLimitMb (128): "
    "Kubernetes refuses a request above the limit",
    "VPA sizes a hog whose request is its limit": "memoryRequestMb=64: must be 0 (the limit) with vpa=Auto: VPA "
    "scales the limit with the request, and `make verify ARGS=--vpa` predicts its answer to a kill from a request "
    "equal to the limit (`pulumi config rm memoryRequestMb`, or set vpa none)",
}


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_each_rule_refuses_its_key_alone(rule: object) -> None:
    assert isinstance(rule, type(RULES[0]))
    config = BREAKS[rule.name]
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert caught.value.key == rule.key
    assert str(caught.value) == f"invalid config oom-killer:{REFUSALS[rule.name]}"
    assert rule.refuses(
        {**{r.key: r.parse(None) for r in ROWS}, **{k: SETTINGS[k].parse(v) for k, v in config.items()}}
    )


def test_the_bounds_the_docs_said_wrongly_are_the_ones_the_code_keeps() -> None:
    # Supervised: two interpreters, so a step and a ceiling leave 32 MiB, not 16 (a step its page tables too).
    with pytest.raises(ConfigError, match=r"memoryIncrementMb=97: must be at most 95 for processModel=supervised"):
        load({"memoryLimitMb": "128", "processModel": "supervised", "memoryIncrementMb": "97"})
    # Page cache is never killed: a ceiling may go past the limit, up to the row's 1 TiB.
    assert load({"memoryKind": "pagecache", "memoryCeilingMb": str(1024 * 1024)})
    docs = config_files.CONFIGURATION_DOC.read_text()
    summary = SETTINGS["memoryCeilingMb"].summary
    assert "less 32 with processModel=supervised" in summary
    assert "up to 1048576" in summary
    assert "less 32 with `processModel=supervised`" in docs


def test_set_checks_each_value_by_the_table_in_one_line() -> None:
    assert stack_overrides("dev", ["memoryLimitMb=64", "memoryKind=tmpfs"]) == {
        "memoryLimitMb": "64",
        "memoryKind": "tmpfs",
    }
    for pair, line in [
        ("memoryLimitMb=lots", "invalid config oom-killer:memoryLimitMb='lots': must be a whole number"),
        ("memoryLimitMb=4", "invalid config oom-killer:memoryLimitMb=4: must be from 18 to 1048576 (MiB): "),
        ("memoryKind=heap", "invalid config oom-killer:memoryKind='heap': must be one of anonymous, tmpfs, pagecache"),
        ("prometheusRule=yes", "invalid config oom-killer:prometheusRule='yes': must be true or false"),
    ]:
        with pytest.raises(UsageError) as caught:
            stack_overrides("dev", [pair])
        assert str(caught.value).startswith(line)
        assert "\n" not in str(caught.value)


def test_the_shell_completes_keys_then_a_keys_values() -> None:
    assert setting_names("memoryK") == ["memoryKind="]
    assert setting_names("memoryKind=") == ["memoryKind=anonymous", "memoryKind=tmpfs", "memoryKind=pagecache"]
    assert setting_names("processModel=s") == ["processModel=single", "processModel=supervised"]
    assert setting_names("createNamespace=") == ["createNamespace=true", "createNamespace=false"]
    assert setting_names("memoryLimitMb=") == []


def test_the_table_and_the_set_check_import_without_pulumi() -> None:
    code = (
        "import sys; import infra.table, oomtools.arguments; "
        "oomtools.arguments.stack_overrides('dev', ['scope=node', 'nodeSelector=pool=a']); "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'pulumi'], 'pulumi imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=config_files.PROJECT_DIR, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_refusal_from_the_table_is_the_programs_line() -> None:
    with pytest.raises(Invalid) as caught:
        SETTINGS["replicas"].parse("101")
    with pytest.raises(ConfigError) as program:
        load({"replicas": "101"})
    assert str(caught.value) == str(program.value) == "invalid config oom-killer:replicas=101: must be from 0 to 100"


@pytest.mark.parametrize(
    "config",
    [
        {"memoryLimitMb": "64", "memoryIncrementMb": "47"},  # a step of exactly the room left, with its page tables
        {"memoryLimitMb": "128", "memoryCeilingMb": "112"},  # a ceiling at exactly the room left
        {"memoryLimitMb": "128", "processModel": "supervised", "memoryCeilingMb": "96"},
        {"memoryLimitMb": "128", "memoryCeilingPct": "13"},  # the least percent past the interpreter's baseline
        {"memoryLimitMb": "101", "memoryCeilingPct": "16"},  # 16.16 MiB: just past the 16 MiB baseline
        {"memoryLimitMb": "128", "processModel": "supervised", "memoryCeilingPct": "26"},
        {"memoryLimitMb": "128", "memoryCeilingPct": "99"},
        {"memoryCeilingMb": "0", "memoryCeilingPct": "90"},  # 0 is no ceiling: the percent is the one
        {"scope": "node", "replicas": "0"},  # the stack's pods stopped
        {"scope": "node", "replicas": "1"},
        {"namespace": "kubernetes-lab"},  # kube- is the system's prefix; this is not it
        {"registryUsername": "robot", "registryPassword": "secret", "imageRepository": "ghcr.io/a/b",
         "platform": "linux/amd64"},
        {"prometheusRule": "True", "prometheusRuleLabels": "release=x"},  # as YAML spells true
        {"prometheusRule": "False"},
        {"memoryLimitMb": "128", "memoryRequestMb": "128"},  # a request of the limit: Guaranteed, as 0
        {"memoryLimitMb": "128", "memoryRequestMb": "1"},
        {"memoryLimitMb": "128", "memoryRequestMb": "128", "vpa": "Auto"},  # Guaranteed: what VPA's bump assumes
    ],
)  # fmt: skip
def test_a_value_at_each_rules_edge_is_taken(config: dict[str, str]) -> None:
    assert load(config)


@pytest.mark.parametrize(
    ("config", "refusal"),
    [
        (
            {"memoryLimitMb": "128", "processModel": "supervised", "memoryCeilingMb": "97"},
            "memoryCeilingMb=97: must be 0 (no ceiling) or at most 96 for processModel=supervised: memoryLimitMb "
            "(128) less up to 16 MiB for each of two interpreters, so that it surely holds there",
        ),
        (
            {"memoryLimitMb": "128", "processModel": "supervised", "memoryCeilingPct": "25"},
            "memoryCeilingPct=25: must be 0 (none) or at least 26: 25% of memoryLimitMb (128) is within the up to 16 "
            "MiB for each of two interpreters before the first step, so it would hold having allocated nothing",
        ),
        (
            {"memoryLimitMb": "101", "memoryCeilingPct": "15"},
            "memoryCeilingPct=15: must be 0 (none) or at least 16: 15% of memoryLimitMb (101) is within the up to 16 "
            "MiB the interpreter takes before the first step, so it would hold having allocated nothing",
        ),
        (
            {"memoryCeilingPct": "100"},
            "memoryCeilingPct=100: must be from 0 to 99 (percent of memoryLimitMb)",
        ),
        (
            {"memoryLimitMb": "128", "processModel": "supervised", "memoryIncrementMb": "97"},
            "memoryIncrementMb=97: must be at most 95 for processModel=supervised: memoryLimitMb (128) less up to "
            "16 MiB for each of two interpreters and the step's page tables, or the worker is killed in its first step",
        ),
        (
            {"namespace": "default"},
            "namespace='default': must be a namespace of its own: the stack creates it and `pulumi destroy` deletes "
            "it with all it holds",
        ),
        ({"prometheusRule": "TRUE"}, "prometheusRule='TRUE': must be true or false"),
        (
            {"namespace": "default", "createNamespace": "false"},
            "namespace='default': must be a namespace of its own: its LimitRange and deny-all NetworkPolicy hold "
            "every pod in it",
        ),
        (
            {"image": "registry.example.com/hog:1 latest"},
            "image='registry.example.com/hog:1 latest': an image reference has no white space",
        ),
        (
            {"registryPassword": "secret", "imageRepository": "ghcr.io/a/b", "platform": "linux/amd64"},
            "registryUsername='': and registryPassword go together: set both, or neither to use your docker login",
        ),
        (
            {"tolerations": "a=b:Bad"},
            "tolerations='a=b:Bad': must be key=value:Effect, key:Effect, key=value or key, comma-separated: 'Bad' "
            "(for a=b) is not an effect: NoSchedule, PreferNoSchedule, NoExecute",
        ),
    ],
)
def test_each_refusal_names_the_setting_its_value_and_the_bound_for_the_model(
    config: dict[str, str], refusal: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert str(caught.value) == f"invalid config oom-killer:{refusal}"


def test_tolerations_read_as_kubectl_taint_writes_taints() -> None:
    assert parse_tolerations(" gpu=yes:NoSchedule, dedicated:NoExecute ,spot=true,any ,") == (
        Toleration("gpu", "yes", "NoSchedule"),
        Toleration("dedicated", None, "NoExecute"),
        Toleration("spot", "true", ""),
        Toleration("any", None, ""),
    )
    assert [t.operator for t in parse_tolerations("a=b,a")] == ["Equal", "Exists"]
    assert parse_tolerations("a=:NoSchedule") == (Toleration("a", "", "NoSchedule"),)  # Equal to the empty value
    for bad in ("a:Never", "a=b:NoSchedule:NoExecute", "a b:NoSchedule", "=b"):
        with pytest.raises(ValueError, match=r".") as caught:
            parse_tolerations(bad)
        assert "\n" not in str(caught.value), bad


@pytest.mark.parametrize(
    ("stack", "namespace"),
    [
        ("dev", "oom-killer-dev"),
        ("Team_A.prod", "oom-killer-team-a-prod"),
        ("dev_", "oom-killer-dev"),  # no dash left at either end
        ("x" * 80, ("oom-killer-" + "x" * 80)[:63]),
    ],
)
def test_a_stacks_own_namespace_is_a_valid_name_made_from_the_stacks(stack: str, namespace: str) -> None:
    assert default_namespace(stack) == namespace


@given(
    limit=st.integers(min_value=2 * MIN_LIMIT_MIB, max_value=MAX_MIB // 256),
    model=st.sampled_from(["single", "supervised"]),
)
def test_the_largest_step_allowed_is_the_largest_the_hogs_own_prediction_lets_finish(limit: int, model: str) -> None:
    # With the largest baseline charged, the largest step the rule allows completes (the kill comes in step 2 or
    # later), and one MiB more would be killed in its first step: the bound is exact, not merely safe.
    largest = step_room_mib(limit, model)
    baseline = process_model(model).baseline_max_mib * MIB
    allowed = predict_kill(limit * MIB, baseline, largest, 0, None)
    one_more = predict_kill(limit * MIB, baseline, largest + 1, 0, None)
    assert allowed is not None
    assert one_more is not None
    assert allowed.expected >= 2
    assert one_more.expected == 1
