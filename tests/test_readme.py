"""The README is the landing page and docs/ the user's guide: the references must say what the code does, no more and
no less, every link must lead somewhere, and the first screen must give the way in."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from oomtools import cli, demo, verify
from oomtools.render import render
from tests.support import PROJECT
from workload.settings import parse_settings

README = (PROJECT / "README.md").read_text()
DOCS = PROJECT / "docs"
FIRST_SCREEN_LINES = 40
README_MAX_LINES = 150
MISTYPED = "memoryIncremntMb"  # the typo docs/troubleshooting.md shows on purpose


def page(name: str) -> str:
    """A page of docs/, by its file name."""
    return (DOCS / name).read_text()


def every_page() -> dict[Path, str]:
    """The README and every page of docs/, by path."""
    return {path: path.read_text() for path in [PROJECT / "README.md", *sorted(DOCS.glob("*.md"))]}


def section(heading: str, text: str = README) -> str:
    """The text under a heading (of the README, or of the page given), up to the next heading of the same or a
    higher level."""
    text = "\n" + text
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    following = re.compile(rf"\n#{{1,{len(level)}}} ")
    found = following.search(text, start + len(heading) + 2)
    return text[start : found.start() if found else len(text)]


def table(text: str) -> dict[str, list[str]]:
    """First-column names (in backticks) of a Markdown table, each with its other cells."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def without_code_blocks(text: str) -> str:
    return re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.DOTALL | re.MULTILINE)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lowercased, punctuation dropped, spaces to hyphens, a repeated
    one numbered."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", without_code_blocks(text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        numbered, n = slug, 0
        while numbered in found:
            n += 1
            numbered = f"{slug}-{n}"
        found.add(numbered)
    return found


def relative_links(text: str) -> list[str]:
    """The targets of a page's Markdown links that point inside the project (not to a web address)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", without_code_blocks(text))
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


class RecordingEnv(dict[str, str]):
    """An empty environment that notes every variable the workload asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_the_first_screen_gives_the_two_commands_and_the_rehearsal_without_a_cluster() -> None:
    lines = README.splitlines()
    assert len(lines) < README_MAX_LINES, "the README is a landing page: references go to docs/"
    first_screen = "\n".join(lines[:FIRST_SCREEN_LINES])
    blocks = re.findall(r"```sh\n(.*?)```", first_screen, re.DOTALL)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    assert commands[:2] == ["make up", "make test"], "the first code block: run it, test it"
    assert "make demo" in commands
    assert first_screen.index("make demo") < first_screen.index("verdict=")  # and what it ends with


def test_every_page_of_docs_is_linked_from_the_readme_and_links_back() -> None:
    linked = {target.split("#")[0] for target in relative_links(README)}
    pages = sorted(DOCS.glob("*.md"))
    assert pages
    for path in pages:
        assert f"docs/{path.name}" in linked, path.name
        assert "../README.md" in relative_links(path.read_text()), path.name


def test_every_relative_link_leads_to_a_file_and_heading_that_exist() -> None:
    checked = 0
    for path, text in every_page().items():
        for target in relative_links(text):
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.is_relative_to(PROJECT), f"{path.name}: {target} leaves the project"
            assert linked.is_file(), f"{path.name}: {target} names no file"
            if anchor:
                assert anchor in anchors(linked.read_text()), f"{path.name}: {target} names no heading there"
            checked += 1
    assert checked >= 20  # the README's links to docs/ and the pages' links to each other and back


def test_the_configuration_reference_lists_exactly_the_declared_keys_with_their_defaults() -> None:
    declared = yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())["config"]
    reference = table(section("## Stack config", page("configuration.md")))
    assert set(reference) == set(declared)
    for key, (kind, default, _meaning) in reference.items():
        assert kind == declared[key]["type"], key
        expected = declared[key]["default"]
        expected = str(expected).lower() if isinstance(expected, bool) else expected  # YAML's spelling: false
        assert default == ('`""`' if expected == "" else f"`{expected}`"), key


def test_the_environment_reference_lists_exactly_the_variables_the_workload_reads() -> None:
    env = RecordingEnv()
    parse_settings(env)
    reference = table(section("## The workload's environment", page("configuration.md")))
    assert env.asked
    assert set(reference) == env.asked


def test_every_make_target_the_docs_name_exists() -> None:
    makefile = (PROJECT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))
    command = re.compile(r"(?:^|`)make ([a-z][a-z0-9-]*)", re.MULTILINE)  # commands, not prose
    assert {"up", "test", "demo", "verify", "destroy"} <= set(command.findall(README))
    for path, text in every_page().items():
        assert set(command.findall(text)) <= targets, path.name


def test_every_key_the_docs_set_is_declared() -> None:
    declared = set(yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())["config"])
    used: set[str] = set()
    for path, text in every_page().items():
        keys = set(re.findall(r"pulumi\s+config\s+set\s+(?:--secret\s+)?([A-Za-z]+)", text))  # wrapped lines too
        assert keys - {MISTYPED} <= declared, (path.name, keys - declared)
        used |= keys
    assert {"memoryIncrementMb", "imageRepository", "platform", "prometheusRule"} <= used
    assert MISTYPED not in declared


def test_every_stack_output_is_named_in_the_configuration_reference() -> None:
    exports = render({}).exports
    text = section("## What a stack exports", page("configuration.md"))
    for name in exports:
        assert f"`{name}`" in text, name


def exit_code_table(text: str, after: str = "") -> set[int]:
    """The codes of the first exit-code table (after a marker, if given)."""
    start = text.index("| exit code | meaning |", text.index(after))
    return {int(code) for code in table(text[start : text.index("\n\n", start)])}


def test_every_exit_code_of_the_demo_is_in_its_page() -> None:
    codes = {value for name, value in vars(demo).items() if name.startswith("EXIT_")}
    assert set(demo.CODE_MEANINGS) == codes  # what --help lists
    assert exit_code_table(section("## Exit codes", page("demo.md"))) == codes


def test_every_exit_code_of_verify_is_in_its_page() -> None:
    codes = {value for name, value in vars(verify).items() if name.startswith("EXIT_")}
    assert set(verify.CODE_MEANINGS) == codes
    assert exit_code_table(section("## Exit codes", page("verify.md"))) == codes


def test_every_exit_code_of_render_is_on_the_commands_page() -> None:
    assert exit_code_table(page("cli.md"), after="`oom-killer render`:") == set(cli.RENDER_CODE_MEANINGS)


def test_every_field_of_a_sample_verdict_line_is_one_the_tools_write() -> None:
    tools = [PROJECT / "oomtools" / name for name in ("demo.py", "rehearsal.py", "verdict.py")]
    tools += sorted((PROJECT / "oomtools" / "verify").glob("*.py"))
    sources = "".join(path.read_text() for path in tools)
    samples = [line for text in every_page().values() for line in text.splitlines() if line.startswith("verdict=")]
    assert len(samples) >= 4  # the demo's and verify's, on the README and on their pages
    for line in samples:
        for key in re.findall(r"(?:^| )([a-z_]+)=", line):
            assert re.search(rf"\b{key}=|[\"']{key}[\"']", sources), (key, line[:40])


def test_each_cluster_path_gets_the_image_to_the_nodes_before_watching() -> None:
    paths = section("## Getting the image to your nodes", page("cluster.md"))
    # minikube builds into its own engine, and ECR has the repository, before `make up` pushes or builds.
    for cluster, step in {"**minikube**": "eval $(minikube docker-env)", "**Amazon ECR**": "create-repository"}.items():
        text = paths[paths.index(cluster) :]
        assert text.index(step) < text.index("make up"), cluster
    # kind is given the image `make up` built, before anyone watches for the pod.
    kind = paths[paths.index("**kind**") :]
    assert kind.index("make up") < kind.index("kind load docker-image") < kind.index("--watch")
    assert "**Docker Desktop**" in paths
    assert "pulumi config set platform" in paths


def test_the_first_screen_gives_a_way_past_a_registry_that_cannot_be_reached() -> None:
    # The make demo failed after 34 s (Error 4: the base image cannot be pulled), and BASE_IMAGE was nowhere
    # on the README: its first screen gives a mirror's image, and a base image made from Debian packages.
    first_screen = "\n".join(README.splitlines()[:FIRST_SCREEN_LINES])
    blocks = re.findall(r"```sh\n(.*?)```", first_screen, re.DOTALL)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    assert any(command.startswith("make demo BASE_IMAGE=") for command in commands)
    assert "sudo make base-image && make demo BASE_IMAGE=oom-killer-base:bookworm" in commands
    makefile = (PROJECT / "Makefile").read_text()
    assert "BASE_IMAGE_TAG ?= oom-killer-base:bookworm" in makefile
    assert "make base-image" in cli_advice()


def cli_advice() -> str:
    """What the demo says when the base image cannot be had: the README's way, too."""
    from oomtools.rehearsal import BASE_IMAGE_ADVICE

    return BASE_IMAGE_ADVICE
