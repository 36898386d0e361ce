"""The README is the user's guide: its references must say what the code does, no more and no less."""

from __future__ import annotations

import re

import yaml

from oomtools import demo
from oomtools.render import render
from tests.conftest import PROJECT
from workload.settings import parse_settings

README = (PROJECT / "README.md").read_text()


def section(heading: str) -> str:
    """The README's text under a heading, up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = README.index(f"\n{heading}\n")
    following = re.compile(rf"\n#{{1,{len(level)}}} ")
    found = following.search(README, start + len(heading) + 2)
    return README[start : found.start() if found else len(README)]


def table(text: str) -> dict[str, list[str]]:
    """First-column names (in backticks) of a Markdown table, each with its other cells."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


class RecordingEnv(dict[str, str]):
    """An empty environment that notes every variable the workload asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_the_configuration_reference_lists_exactly_the_declared_keys_with_their_defaults() -> None:
    declared = yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())["config"]
    reference = table(section("## Configuration reference").split("### ")[0])
    assert set(reference) == set(declared)
    for key, (kind, default, _meaning) in reference.items():
        assert kind == declared[key]["type"], key
        expected = declared[key]["default"]
        expected = str(expected).lower() if isinstance(expected, bool) else expected  # YAML's spelling: false
        assert default == ('`""`' if expected == "" else f"`{expected}`"), key


def test_the_environment_reference_lists_exactly_the_variables_the_workload_reads() -> None:
    env = RecordingEnv()
    parse_settings(env)
    reference = table(section("### The workload's environment"))
    assert env.asked
    assert set(reference) == env.asked


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (PROJECT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"(?:^|`)make ([a-z][a-z0-9-]*)", README, re.MULTILINE))  # commands, not prose
    assert {"up", "test", "demo", "destroy"} <= named
    assert named <= targets


def test_every_key_the_readme_sets_is_declared() -> None:
    declared = set(yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())["config"])
    used = set(re.findall(r"pulumi config set (?:--secret )?([A-Za-z]+)", README))
    assert used
    assert used <= declared


def test_every_stack_output_is_named_in_the_readme() -> None:
    exports = render({}).exports
    for name in exports:
        assert f"`{name}`" in README, name


def test_every_exit_code_of_make_demo_is_in_the_readme() -> None:
    codes = {value for name, value in vars(demo).items() if name.startswith("EXIT_")}
    start = README.index("| exit code | meaning |")
    listed = table(README[start : README.index("\n\n", start)])
    assert {int(code) for code in listed} == codes


def test_each_cluster_path_gets_the_image_to_the_nodes_before_watching() -> None:
    paths = section("## Your cluster")
    # minikube builds into its own engine, and ECR has the repository, before `make up` pushes or builds.
    for cluster, step in {"**minikube**": "eval $(minikube docker-env)", "**Amazon ECR**": "create-repository"}.items():
        text = paths[paths.index(cluster) :]
        assert text.index(step) < text.index("make up"), cluster
    # kind is given the image `make up` built, before anyone watches for the pod.
    kind = paths[paths.index("**kind**") :]
    assert kind.index("make up") < kind.index("kind load docker-image") < kind.index("--watch")
    assert "**Docker Desktop**" in paths
    assert "pulumi config set platform" in paths
