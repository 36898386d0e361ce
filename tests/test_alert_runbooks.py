"""Every alert links its own runbook (`runbook_url`, in the rule file and in the generated manifest), and the runbook
is there under docs/runbooks/ and says what the alert means, what the hog's kill looks like, what to check and how to
silence it in a test namespace."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.monitoring import rule_groups
from oomtools import alert_catalogue as catalogue
from oomtools import alerts

PROJECT = Path(__file__).resolve().parent.parent
PARTS = ("What it means", "What the hog's kill looks like", "What to check", "Silence it in a test namespace")


def runbook_urls(groups: list[dict[str, Any]]) -> dict[str, str | None]:
    return {rule["alert"]: rule["annotations"].get("runbook_url") for group in groups for rule in group["rules"]}


def test_every_alert_links_its_own_runbook_in_the_rule_file_and_the_manifest() -> None:
    expected = {alert.name: str(alert.runbook) for alert in catalogue.ALERTS}
    assert runbook_urls(rule_groups()) == expected
    assert runbook_urls(yaml.safe_load(alerts.MANIFEST_FILE.read_text())["spec"]["groups"]) == expected


def test_a_runbook_url_base_makes_each_runbook_a_link_and_a_bad_base_is_refused_in_one_line() -> None:
    base = "https://github.com/acme/oom-killer/blob/main/"
    out, err = io.StringIO(), io.StringIO()
    assert alerts.main(["--runbook-url-base", base], out=out, err=err) == 0
    printed = out.getvalue()
    manifest = yaml.safe_load(printed)
    assert runbook_urls(manifest["spec"]["groups"]) == {
        alert.name: f"https://github.com/acme/oom-killer/blob/main/{alert.runbook}" for alert in catalogue.ALERTS
    }
    assert f"--runbook-url-base {base}" in printed.splitlines()[0]  # the header's command makes it again
    assert alerts.main(["--runbook-url-base", "docs/runbooks"], out=out, err=err) == 2
    (line,) = err.getvalue().splitlines()
    assert "--runbook-url-base 'docs/runbooks'" in line


@pytest.mark.parametrize("alert", catalogue.ALERTS, ids=lambda alert: alert.name)
def test_each_runbook_exists_and_says_what_a_runbook_must(alert: catalogue.Alert) -> None:
    path = PROJECT / alert.runbook
    assert path.is_file(), f"no runbook {alert.runbook} for {alert.name}"
    text = path.read_text()
    assert text.startswith(f"# {alert.name}\n")
    for part in PARTS:
        assert f"**{part}.**" in text, (alert.name, part)
    assert f"alertname={alert.name} namespace=" in text, "the silence names the alert and the namespace"


@pytest.mark.parametrize("alert", catalogue.ALERTS, ids=lambda alert: alert.name)
def test_the_runbooks_links_lead_to_files_that_exist(alert: catalogue.Alert) -> None:
    path = PROJECT / alert.runbook
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text())
    assert links, alert.name
    for link in links:
        assert (path.parent / link).resolve().is_file(), (alert.name, link)
