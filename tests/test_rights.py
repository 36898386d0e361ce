"""infra/rights.yaml, the rights a cluster admin grants (issue 19, least privilege): it parses and validates against
the real schemas; its Namespace carries exactly the labels of the stack's own; the deployer's rules cover every
object the program can declare into an admin's namespace (createNamespace=false), an option's rights only in its own
documents; and nothing else is writable: no wildcard, nothing cluster-scoped, a read-only verifier. Each check is
shown to catch a manifest broken its way. The real cluster proves the same rights enough and the rest refused:
tests/e2e/test_least_privilege.py."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from oomtools.render import render, stack_config
from tests.support import PROJECT
from tests.test_manifests import VERSIONS
from tests.test_program_rights import CONFIGS

MANIFEST = PROJECT / "infra" / "rights.yaml"
DEPLOYERS, VERIFIERS, RESIZERS = "oom-killer-deployers", "oom-killer-verifiers", "oom-killer-resizers"
READ_ONLY = frozenset({"get", "list", "watch"})
# What the user's commands do to each object, by its name: server-side apply (patch, and create for a new one),
# refresh and preview (get), destroy (delete).
BY_NAME = ("create", "delete", "get", "patch")
# And, in the namespace, on the kind of each object destroy waits for (all but those with skipAwait): the watch
# pulumi-kubernetes waits with (an informer: it lists and watches the whole kind).
WAITED_FOR = ("list", "watch")
SKIP_AWAIT = "pulumi.com/skipAwait"
ONLY_FOR = "oom-killer.io/only-for"  # the label of an option's documents: the config key that needs them
# The options each config of tests/test_program_rights.py uses, by the config keys the manifest labels them with.
OPTIONS = {
    "dev": set(),
    "node": set(),
    "prometheus-rule": {"prometheusRule"},
    "pushed": {"registryPassword"},
    "vpa": {"vpa"},
}
# The Kubernetes API calls of make verify (oomtools/verify/), each as RBAC sees it: group, resource, verb, and whether
# it is in the stack's namespace (else cluster-wide).
VERIFY_CALLS = {
    "read_namespaced_deployment": ("apps", "deployments", "get", True),
    "read_namespaced_daemon_set": ("apps", "daemonsets", "get", True),
    "list_namespaced_pod": ("", "pods", "list", True),
    "read_namespaced_pod_log": ("", "pods/log", "get", True),
    "list_namespaced_event": ("", "events", "list", True),
    "list_node": ("", "nodes", "list", False),
    "get_namespaced_custom_object": ("autoscaling.k8s.io", "verticalpodautoscalers", "get", True),  # --vpa
}
# oom-killer resize's calls (oomtools/resize/, and the workload's read it shares with verify), in the namespace.
RESIZE_CALLS = {
    "read_namespaced_deployment": ("apps", "deployments", "get"),
    "read_namespaced_daemon_set": ("apps", "daemonsets", "get"),
    "list_namespaced_pod": ("", "pods", "list"),
    "read_namespaced_pod": ("", "pods", "get"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    "patch_namespaced_pod_resize": ("", "pods/resize", "patch"),
}
NAMESPACE_MARK = "  # namespace"  # the lines docs/rights.md tells an admin to change for another namespace

Document = dict[str, Any]


def documents(text: str | None = None) -> list[Document]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text() if text is None else text) if d]


def selected(docs: list[Document], options: set[str]) -> list[Document]:
    """What `kubectl apply --selector` takes for these options: the documents of no option, and those of each one."""
    return [d for d in docs if d["metadata"].get("labels", {}).get(ONLY_FOR, None) in {None, *options}]


def renamed(text: str, namespace: str) -> str:
    """The manifest for another namespace, as docs/rights.md tells an admin to make it (its sed, in Python)."""
    return re.sub(rf"oom-killer({re.escape(NAMESPACE_MARK)})$", rf"{namespace}\1", text, flags=re.MULTILINE)


def the_namespace(docs: list[Document]) -> Document:
    (found,) = [d for d in docs if d["kind"] == "Namespace"]
    return found


def roles_bound_to(docs: list[Document], group: str, binding_kind: str) -> list[Document]:
    """The ClusterRoles of the manifest that its bindings of this kind give to this group."""
    names = {
        d["roleRef"]["name"]
        for d in docs
        if d["kind"] == binding_kind
        and d["roleRef"]["kind"] == "ClusterRole"
        and any(s["kind"] == "Group" and s["name"] == group for s in d["subjects"])
    }
    return [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] in names]


def rules_of(roles: list[Document]) -> Iterator[dict[str, Any]]:
    for role in roles:
        yield from role.get("rules", [])


def plural(kind: str) -> str:
    lower = kind.lower()
    return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


def allows(rules: list[dict[str, Any]], group: str, resource: str, name: str | None, verb: str) -> bool:
    """Whether a rule grants the verb on the resource (by this name, or with None on the whole kind)."""
    return any(
        group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and verb in rule.get("verbs", [])
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
        for rule in rules
    )


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


# -- the checks, each a list of what is wrong ---------------------------------------------------------------------


def uncovered(docs: list[Document], config_name: str) -> list[str]:
    """What the deployer may not do that the user's commands do to the objects this config declares into the
    manifest's namespace (createNamespace=false), given these documents: `Kind/name: verb` (`Kind/*` for the kind)."""
    namespace = the_namespace(docs)["metadata"]["name"]
    bound_here = {
        d["roleRef"]["name"] for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == namespace
    }
    rules = list(
        rules_of([r for r in roles_bound_to(docs, DEPLOYERS, "RoleBinding") if r["metadata"]["name"] in bound_here])
    )
    config, secrets = CONFIGS[config_name]
    declared = render({**config, "namespace": namespace, "createNamespace": "false"}, secrets=secrets)
    missing = []
    for manifest in declared.kubernetes_objects():
        group, kind = manifest["apiVersion"].rpartition("/")[0], manifest["kind"]
        name = manifest["metadata"]["name"]
        missing += [f"{kind}/{name}: {verb}" for verb in BY_NAME if not allows(rules, group, plural(kind), name, verb)]
        if manifest["metadata"].get("annotations", {}).get(SKIP_AWAIT) != "true":
            missing += [
                f"{kind}/*: {verb}" for verb in WAITED_FOR if not allows(rules, group, plural(kind), None, verb)
            ]
    return sorted(set(missing))


def api_calls(package: str) -> set[str]:
    """The API methods a package of oomtools calls on its CoreV1Api (core) and AppsV1Api (apps)."""
    pattern = re.compile(r"\b(?:core|apps|custom)\.((?:read|list|watch|create|patch|delete|replace|connect|get)_\w+)")
    return {
        call for path in (PROJECT / "oomtools" / package).glob("*.py") for call in pattern.findall(path.read_text())
    }


def verify_calls() -> set[str]:
    """The API methods oomtools/verify calls."""
    return api_calls("verify")


def resizer_excess(docs: list[Document]) -> dict[str, set[Grant]]:
    """The resizer's grants against oom-killer resize's calls, all in its namespace: exact, both empty. It reads the
    workload by its name, the pods by listing and then the one it resizes."""
    needs = {
        (group, resource, "oom-killer" if resource in ("deployments", "daemonsets") else None, verb)
        for group, resource, verb in RESIZE_CALLS.values()
    }
    have = granted(roles_bound_to(docs, RESIZERS, "RoleBinding"))
    everywhere = granted(roles_bound_to(docs, RESIZERS, "ClusterRoleBinding"))
    return {"extra": (have - needs) | everywhere, "missing": needs - have}


def verifier_uncovered(docs: list[Document]) -> list[str]:
    """make verify's calls the verifier may not make: in its namespace (RoleBinding) or cluster-wide (for nodes)."""
    here = list(rules_of(roles_bound_to(docs, VERIFIERS, "RoleBinding")))
    everywhere = list(rules_of(roles_bound_to(docs, VERIFIERS, "ClusterRoleBinding")))
    return [
        call
        for call, (group, resource, verb, namespaced) in sorted(VERIFY_CALLS.items())
        if not allows(here + everywhere if namespaced else everywhere, group, resource, "oom-killer", verb)
    ]


Grant = tuple[str, str, str | None, str]  # API group, resource, resource name (None: the whole kind), verb


def granted(roles: list[Document]) -> set[Grant]:
    """Every (group, resource, name, verb) these roles' rules grant, one per combination a rule lists."""
    return {
        (group, resource, name, verb)
        for rule in rules_of(roles)
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for name in rule.get("resourceNames") or [None]
        for verb in rule.get("verbs", [])
    }


def deployer_needs(config_name: str, namespace: str) -> set[Grant]:
    """What the user's commands do to the objects this config declares into the namespace (createNamespace=false):
    each verb of BY_NAME on each object by its name, and the informer's list and watch on the kind of each object
    destroy waits for."""
    config, secrets = CONFIGS[config_name]
    declared = render({**config, "namespace": namespace, "createNamespace": "false"}, secrets=secrets)
    needs: set[Grant] = set()
    for manifest in declared.kubernetes_objects():
        group, resource = manifest["apiVersion"].rpartition("/")[0], plural(manifest["kind"])
        needs |= {(group, resource, manifest["metadata"]["name"], verb) for verb in BY_NAME}
        if manifest["metadata"].get("annotations", {}).get(SKIP_AWAIT) != "true":
            needs |= {(group, resource, None, verb) for verb in WAITED_FOR}
    return needs


def deployer_excess(docs: list[Document], options: set[str]) -> dict[str, set[Grant]]:
    """Rights and needs that differ, for the documents an admin applies for these options: what the deployer is
    granted that no config using only these options needs (`extra`: an over-grant, or a grant on a whole kind where
    one by name does), and what such a config needs that is not granted (`missing`). Exact: both empty."""
    namespace = the_namespace(docs)["metadata"]["name"]
    chosen = selected(docs, options)
    bound_here = {
        d["roleRef"]["name"] for d in chosen if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == namespace
    }
    roles = [r for r in roles_bound_to(chosen, DEPLOYERS, "RoleBinding") if r["metadata"]["name"] in bound_here]
    have = granted(roles)
    needs = set().union(*(deployer_needs(name, namespace) for name, used in OPTIONS.items() if used <= options))
    return {"extra": have - needs, "missing": needs - have}


def verifier_needs() -> tuple[set[Grant], set[Grant]]:
    """make verify's calls as grants: those in the stack's namespace, and those cluster-wide. It reads the workload by
    its name, and pods, their logs and events by listing (names it cannot know in advance)."""
    here: set[Grant] = set()
    everywhere: set[Grant] = set()
    for group, resource, verb, namespaced in VERIFY_CALLS.values():
        name = "oom-killer" if resource in ("deployments", "daemonsets", "verticalpodautoscalers") else None
        (here if namespaced else everywhere).add((group, resource, name, verb))
    return here, everywhere


def verifier_excess(docs: list[Document]) -> dict[str, set[Grant]]:
    """The verifier's grants against make verify's calls, in its namespace and cluster-wide: exact, both empty."""
    here, everywhere = verifier_needs()
    have_here = granted(roles_bound_to(docs, VERIFIERS, "RoleBinding"))
    have_everywhere = granted(roles_bound_to(docs, VERIFIERS, "ClusterRoleBinding"))
    return {
        "extra": (have_here - here) | (have_everywhere - everywhere),
        "missing": (here - have_here) | (everywhere - have_everywhere),
    }


def wildcards(docs: list[Document]) -> list[str]:
    return [text for doc in docs for text in strings(doc) if "*" in text]


def verifier_writes(docs: list[Document]) -> list[str]:
    roles = roles_bound_to(docs, VERIFIERS, "RoleBinding") + roles_bound_to(docs, VERIFIERS, "ClusterRoleBinding")
    return [verb for rule in rules_of(roles) for verb in rule["verbs"] if verb not in READ_ONLY]


def cluster_wide_writes(docs: list[Document]) -> list[str]:
    """Verbs beyond reading that a ClusterRoleBinding grants (anywhere in the cluster, cluster-scoped objects too)."""
    roles = [role for group in (DEPLOYERS, VERIFIERS) for role in roles_bound_to(docs, group, "ClusterRoleBinding")]
    return [
        f"{role['metadata']['name']}: {verb}"
        for role in roles
        for rule in role["rules"]
        for verb in rule["verbs"]
        if verb not in READ_ONLY
    ]


def namespace_label_drift(docs: list[Document]) -> dict[str, Any]:
    stack = render(stack_config("dev")).one("kubernetes:core/v1:Namespace").inputs["metadata"]
    mine = the_namespace(docs)["metadata"]
    if (mine["name"], mine["labels"]) == (stack["name"], stack["labels"]):
        return {}
    return {"stack": (stack["name"], stack["labels"]), "manifest": (mine["name"], mine["labels"])}


# -- the manifest as it is ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_validates_strictly(version: str) -> None:
    docs = documents()
    assert sorted({d["kind"] for d in docs}) == ["ClusterRole", "ClusterRoleBinding", "Namespace", "RoleBinding"]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_namespace_carries_exactly_the_labels_of_the_stacks_own() -> None:
    assert namespace_label_drift(documents()) == {}


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_the_deployer_may_do_what_the_user_commands_do_with_the_documents_of_the_options_it_uses(
    config_name: str,
) -> None:
    assert uncovered(selected(documents(), OPTIONS[config_name]), config_name) == []


@pytest.mark.parametrize("option", sorted(set().union(*OPTIONS.values())))
def test_an_options_rights_are_in_its_own_documents_and_only_there(option: str) -> None:
    """Without its documents, only the option's own objects are not covered; with them, nothing else is granted that
    the other configs need or a config without the option uses."""
    (config_name,) = [name for name, options in OPTIONS.items() if options == {option}]
    without = uncovered(selected(documents(), set()), config_name)
    assert without
    own_kinds = {
        manifest["kind"]
        for manifest in render(
            {**CONFIGS[config_name][0], "createNamespace": "false"}, secrets=CONFIGS[config_name][1]
        ).kubernetes_objects()
        if manifest["kind"] not in {m["kind"] for m in render(stack_config("dev")).kubernetes_objects()}
    }
    assert {line.split("/")[0] for line in without} == own_kinds
    docs = [d for d in documents() if d["metadata"].get("labels", {}).get(ONLY_FOR) == option]
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "RoleBinding"]
    assert {resource for rule in rules_of(docs) for resource in rule["resources"]} == {plural(k) for k in own_kinds}


@pytest.mark.parametrize("options", sorted(map(sorted, OPTIONS.values())))
def test_the_deployer_is_granted_exactly_what_the_configs_of_its_options_need(options: list[str]) -> None:
    """Not a deny-list: any right beyond what the program's objects need (create on pods, a ConfigMap, a Role, a
    grant on a whole kind where one by name does) is an extra, and fails."""
    assert deployer_excess(documents(), set(options)) == {"extra": set(), "missing": set()}


def test_the_verifier_is_granted_exactly_what_make_verify_calls() -> None:
    assert verify_calls() == set(VERIFY_CALLS), "a call of oomtools/verify not in VERIFY_CALLS: give it its right"
    assert verifier_excess(documents()) == {"extra": set(), "missing": set()}


def test_the_resizer_is_granted_exactly_what_oom_killer_resize_calls() -> None:
    shared = {"read_namespaced_deployment", "read_namespaced_daemon_set"}  # read_workload, in oomtools/verify
    assert api_calls("resize") | shared == set(RESIZE_CALLS), "a call of oomtools/resize not in RESIZE_CALLS"
    assert resizer_excess(documents()) == {"extra": set(), "missing": set()}
    # Its one write is the resize subresource: never the pod, the workload or anything cluster-wide.
    writes = {
        grant for grant in granted(roles_bound_to(documents(), RESIZERS, "RoleBinding")) if grant[3] not in READ_ONLY
    }
    assert writes == {("", "pods/resize", None, "patch")}


def test_the_base_documents_give_no_right_on_secrets() -> None:
    """Without registry credentials the deployer cannot read a Secret of its namespace: the pull Secret's documents
    alone give any (and their watch on the kind reads them all, so they are left out where not needed)."""
    base = selected(documents(), set())
    assert not [rule for rule in rules_of(base) if "secrets" in rule["resources"]]


def test_the_deployer_gets_nothing_cluster_wide() -> None:
    assert roles_bound_to(documents(), DEPLOYERS, "ClusterRoleBinding") == []


def test_no_wildcard_anywhere() -> None:
    assert wildcards(documents()) == []


def test_the_verifier_may_make_every_call_of_make_verify() -> None:
    assert verify_calls() == set(VERIFY_CALLS), "a call of oomtools/verify not in VERIFY_CALLS: give it its right"
    assert verifier_uncovered(documents()) == []


def test_the_verifier_only_reads_and_nothing_is_writable_cluster_wide() -> None:
    assert roles_bound_to(documents(), VERIFIERS, "RoleBinding")
    assert verifier_writes(documents()) == []
    assert cluster_wide_writes(documents()) == []


def test_every_binding_names_a_role_of_the_manifest_and_sits_in_its_namespace() -> None:
    docs = documents()
    namespace = the_namespace(docs)["metadata"]["name"]
    roles = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert {b["roleRef"]["name"] for b in bindings} == roles  # no role left unbound, none bound that is not here
    assert {b["metadata"]["namespace"] for b in bindings if b["kind"] == "RoleBinding"} == {namespace}
    for binding in bindings:  # a binding is selected with its role
        (bound,) = [
            d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == binding["roleRef"]["name"]
        ]
        assert binding["metadata"]["labels"].get(ONLY_FOR) == bound["metadata"]["labels"].get(ONLY_FOR)


def test_renaming_the_namespace_as_the_docs_say_moves_every_reference() -> None:
    original = documents()
    moved = documents(renamed(MANIFEST.read_text(), "my-lab"))
    assert the_namespace(moved)["metadata"]["name"] == "my-lab"
    assert {d["metadata"]["namespace"] for d in moved if "namespace" in d["metadata"]} == {"my-lab"}
    assert uncovered(moved, "dev") == []
    # Nothing else changed: the same documents but for the namespace.
    for before, after in zip(original, moved, strict=True):
        before, after = copy.deepcopy(before), copy.deepcopy(after)
        for doc in (before, after):
            doc["metadata"].pop("namespace", None)
            if doc["kind"] == "Namespace":
                doc["metadata"].pop("name")
        assert before == after
    marked = re.findall(rf"^ +\w+: oom-killer{re.escape(NAMESPACE_MARK)}$", MANIFEST.read_text(), re.MULTILINE)
    assert len(marked) == 1 + len([d for d in original if "namespace" in d["metadata"]])


# -- the checks catch what they are for ----------------------------------------------------------------------------


def broken(change: Callable[[list[Document]], None]) -> list[Document]:
    docs = copy.deepcopy(documents())
    change(docs)
    return docs


def role(docs: list[Document], name: str) -> Document:
    (found,) = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == name]
    return found


def test_each_check_catches_a_manifest_broken_its_way() -> None:
    def no_daemon_sets(docs: list[Document]) -> None:
        for rule in role(docs, "oom-killer-deployer")["rules"]:
            if "daemonsets" in rule["resources"]:
                rule["resources"].remove("daemonsets")

    def no_watch(docs: list[Document]) -> None:
        for rule in role(docs, "oom-killer-deployer")["rules"]:
            rule["verbs"] = [verb for verb in rule["verbs"] if verb != "watch"]

    def pod_security_off(docs: list[Document]) -> None:
        the_namespace(docs)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"

    def wildcard(docs: list[Document]) -> None:
        role(docs, "oom-killer-deployer")["rules"][0]["verbs"] = ["*"]

    def verifier_deletes(docs: list[Document]) -> None:
        role(docs, "oom-killer-verifier")["rules"][0]["verbs"].append("delete")

    def no_logs(docs: list[Document]) -> None:
        role(docs, "oom-killer-verifier")["rules"] = [
            rule for rule in role(docs, "oom-killer-verifier")["rules"] if rule["resources"] != ["pods/log"]
        ]

    def nodes_patched(docs: list[Document]) -> None:
        role(docs, "oom-killer-node-reader")["rules"][0]["verbs"].append("patch")

    def deployer_creates(resource: str, group: str = "") -> Callable[[list[Document]], None]:
        def change(docs: list[Document]) -> None:
            role(docs, "oom-killer-deployer")["rules"].append(
                {"apiGroups": [group], "resources": [resource], "verbs": ["create"]}
            )

        return change

    def limit_range_by_kind(docs: list[Document]) -> None:
        del role(docs, "oom-killer-deployer")["rules"][0]["resourceNames"]

    def verifier_reads_secrets(docs: list[Document]) -> None:
        role(docs, "oom-killer-verifier")["rules"].append(
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
        )

    for resource, group in [
        ("pods", ""),
        ("configmaps", ""),
        ("serviceaccounts", ""),
        ("roles", "rbac.authorization.k8s.io"),
        ("rolebindings", "rbac.authorization.k8s.io"),
    ]:
        assert deployer_excess(broken(deployer_creates(resource, group)), set())["extra"] == {
            (group, resource, None, "create")
        }
    assert ("", "limitranges", None, "delete") in deployer_excess(broken(limit_range_by_kind), set())["extra"]
    assert deployer_excess(broken(no_daemon_sets), set())["missing"] == {
        ("apps", "daemonsets", "oom-killer", verb) for verb in BY_NAME
    }
    assert verifier_excess(broken(verifier_reads_secrets))["extra"] == {("", "secrets", None, "get")}
    assert verifier_excess(broken(no_logs))["missing"] == {("", "pods/log", None, "get")}

    def resizer_patches_pods(docs: list[Document]) -> None:
        role(docs, "oom-killer-resizer")["rules"][-1]["resources"].append("pods")

    def resizer_cannot_resize(docs: list[Document]) -> None:
        role(docs, "oom-killer-resizer")["rules"].pop()

    assert resizer_excess(broken(resizer_patches_pods))["extra"] == {("", "pods", None, "patch")}
    assert resizer_excess(broken(resizer_cannot_resize))["missing"] == {("", "pods/resize", None, "patch")}
    assert uncovered(broken(no_daemon_sets), "node") == [f"DaemonSet/oom-killer: {verb}" for verb in BY_NAME]
    assert uncovered(broken(no_watch), "dev") == ["LimitRange/*: watch", "NetworkPolicy/*: watch"]
    assert namespace_label_drift(broken(pod_security_off))
    assert wildcards(broken(wildcard)) == ["*"]
    assert verifier_writes(broken(verifier_deletes)) == ["delete"]
    assert verifier_uncovered(broken(no_logs)) == ["read_namespaced_pod_log"]
    assert cluster_wide_writes(broken(nodes_patched)) == ["oom-killer-node-reader: patch"]
    assert verifier_writes(broken(nodes_patched)) == ["patch"]
    misspelt = broken(lambda docs: role(docs, "oom-killer-verifier")["rules"][0].update(verb=["get"]))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role(misspelt, "oom-killer-verifier"), VERSIONS[0], strict=True)
