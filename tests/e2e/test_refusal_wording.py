"""How make e2e's least-privilege test tells an RBAC refusal from any other 403, on the API server's own body
(no cluster needed: this runs in make test). A real run showed the raw body's quotes escaped (`User \\"x\\"`), which
the pattern, matched on the raw text, never found: every refusal read as "not by RBAC"."""

from __future__ import annotations

import json

from tests.e2e.test_least_privilege import refused_by_rbac


def _status(message: str) -> str:
    """A 403 body as the API server sends it: a Status object, JSON."""
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
         "reason": "Forbidden", "details": {"kind": "secrets"}, "code": 403}
    )  # fmt: skip


def test_the_authorizers_refusal_is_read_from_the_status_message() -> None:
    body = _status(
        'secrets is forbidden: User "deployer-e2e" cannot list resource "secrets" in API group "" '
        'in the namespace "kube-system"'
    )
    assert '\\"deployer-e2e\\"' in body  # as the real run's body had it
    assert refused_by_rbac(body)


def test_a_pod_security_refusal_is_not_an_rbac_one() -> None:
    body = _status(
        'pods "x" is forbidden: violates PodSecurity "restricted:latest": privileged (container "x" must not set '
        "securityContext.privileged=true)"
    )
    assert not refused_by_rbac(body)


def test_a_body_that_is_not_a_status_is_not_an_rbac_refusal() -> None:
    assert not refused_by_rbac('User "x" cannot list resource "secrets"')  # not JSON: nothing to read
    assert not refused_by_rbac(json.dumps(["User", "x"]))
    assert not refused_by_rbac(_status("the server is currently unable to handle the request"))
