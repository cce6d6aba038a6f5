"""The policy pack's rules over the mocked graph of both stacks: they pass, and each fires on a broken graph."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from ops.graph import Graph, Resource
from policy import rules
from policy.pack import policies


def as_policy(r: Resource) -> rules.PolicyResource:
    return rules.PolicyResource(type=r.type, name=r.name, props=copy.deepcopy(r.inputs), protect=r.protect)


def test_both_stacks_pass_every_rule(stack: Graph) -> None:
    found = [(r.name, v) for r in stack.custom() for v in rules.violations(as_policy(r))]
    assert found == []


def _first(graph: Graph, typ: str, name_suffix: str = "") -> rules.PolicyResource:
    return as_policy(next(r for r in graph.custom() if r.type == typ and r.name.endswith(name_suffix)))


def _env(resource: rules.PolicyResource, name: str) -> dict[str, Any]:
    [container] = resource.props["template"]["containers"]
    return next(e for e in container["envs"] if e["name"] == name)


Break = Callable[[rules.PolicyResource], rules.PolicyResource]


def _set(path: list[str], value: Any) -> Break:
    def apply(r: rules.PolicyResource) -> rules.PolicyResource:
        target = r.props
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return r

    return apply


def _plain_database_url(r: rules.PolicyResource) -> rules.PolicyResource:
    env = _env(r, "DATABASE_URL")
    env.pop("valueSource")
    env["value"] = "postgresql://alle:hunter2@10.0.0.3/alle"
    return r


def _latest_secret(r: rules.PolicyResource) -> rules.PolicyResource:
    _env(r, "SECRET_KEY")["valueSource"]["secretKeyRef"]["version"] = "latest"
    return r


def _tag_image(r: rules.PolicyResource) -> rules.PolicyResource:
    r.props["template"]["containers"][0]["image"] = "europe-west1-docker.pkg.dev/alle-staging/alle/alle:latest"
    return r


def _public_job(graph: Graph) -> rules.PolicyResource:
    grant = _first(graph, "gcp:cloudrunv2/jobIamMember:JobIamMember")
    grant.props["member"] = "allUsers"
    return grant


def _unprotected(r: rules.PolicyResource) -> rules.PolicyResource:
    return rules.PolicyResource(type=r.type, name=r.name, props=r.props, protect=False)


SQL, REDIS, BUCKET = rules.SQL, rules.REDIS, rules.BUCKET
SERVICE = "gcp:cloudrunv2/service:Service"
BROKEN: list[tuple[str, str, Callable[[Graph], rules.PolicyResource]]] = [
    (
        "sql-private-ip-only",
        "staging",
        lambda g: _set(["settings", "ipConfiguration", "ipv4Enabled"], True)(_first(g, SQL)),
    ),
    (
        "sql-ssl-required",
        "staging",
        lambda g: _set(["settings", "ipConfiguration", "sslMode"], "ALLOW_UNENCRYPTED_AND_ENCRYPTED")(_first(g, SQL)),
    ),
    ("bucket-not-public", "staging", lambda g: _set(["publicAccessPrevention"], "inherited")(_first(g, BUCKET))),
    ("no-plaintext-secret-env", "staging", lambda g: _plain_database_url(_first(g, SERVICE))),
    ("secret-versions-pinned", "production", lambda g: _latest_secret(_first(g, SERVICE))),
    (
        "no-primitive-roles",
        "staging",
        lambda g: _set(["role"], "roles/editor")(_first(g, "gcp:projects/iAMMember:IAMMember")),
    ),
    (
        "no-project-wide-secret-access",
        "staging",
        lambda g: _set(["role"], "roles/secretmanager.secretAccessor")(_first(g, "gcp:projects/iAMMember:IAMMember")),
    ),
    ("images-pinned-by-digest", "production", lambda g: _tag_image(_first(g, "gcp:cloudrunv2/workerPool:WorkerPool"))),
    ("no-public-principals", "staging", _public_job),
    ("only-web-service-public", "staging", lambda g: _set(["invokerIamDisabled"], True)(_first(g, rules.JOB))),
    (
        "only-web-service-public",
        "production",
        lambda g: _set(["name"], "alle-production-admin")(_first(g, SERVICE)),
    ),
    (
        "secret-versions-survive-rotation",
        "staging",
        lambda g: _set(["deletionPolicy"], "DELETE")(_first(g, rules.SECRET_VERSION)),
    ),
    (
        "release-label-only-on-releases",
        "production",
        lambda g: _set(["settings", "userLabels", "release"], "v1-2-3")(_first(g, SQL)),
    ),
    (
        "labels-present",
        "staging",
        lambda g: _set(["template", "labels"], {"app": "alle", "stack": "staging"})(_first(g, SERVICE)),
    ),
    ("production-data-protected", "production", lambda g: _set(["tier"], "BASIC")(_first(g, REDIS))),
    (
        "production-data-protected",
        "production",
        lambda g: _set(["settings", "availabilityType"], "ZONAL")(_first(g, SQL)),
    ),
    ("production-data-protected", "production", lambda g: _unprotected(_first(g, BUCKET))),
    ("redis-auth-and-tls", "staging", lambda g: _set(["transitEncryptionMode"], "DISABLED")(_first(g, REDIS))),
    ("labels-present", "staging", lambda g: _set(["labels"], {"app": "alle"})(_first(g, BUCKET))),
]


@pytest.mark.parametrize(
    ("rule", "stack_name", "broken"), BROKEN, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(BROKEN)]
)
def test_rule_fires_on_a_broken_graph(
    rule: str, stack_name: str, broken: Callable[[Graph], rules.PolicyResource], staging: Graph, production: Graph
) -> None:
    graph = staging if stack_name == "staging" else production
    assert rule in {name for name, _ in rules.violations(broken(graph))}


def test_every_rule_has_a_breaking_test() -> None:
    assert {rule.name for rule in rules.RULES} == {name for name, _, _ in BROKEN}


def test_staging_may_run_unprotected_zonal_data_services(staging: Graph) -> None:
    zonal = _set(["settings", "availabilityType"], "ZONAL")(_first(staging, SQL))
    assert rules.violations(_unprotected(zonal)) == []


def test_the_pack_reports_each_rule_through_crossguard(staging: Graph) -> None:
    by_name = {p.name: p for p in policies()}
    assert set(by_name) == {r.name for r in rules.RULES} | {r.name for r in rules.STACK_RULES}
    sql = _set(["settings", "ipConfiguration", "ipv4Enabled"], True)(_first(staging, SQL))
    reported: list[str] = []
    args = ResourceValidationArgs(
        resource_type=sql.type,
        props=sql.props,
        urn="urn:pulumi:staging::alle::x::y",
        name=sql.name,
        opts=PolicyResourceOptions(
            protect=False,
            ignore_changes=[],
            delete_before_replace=None,
            aliases=[],
            custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
            additional_secret_outputs=[],
        ),
        provider=None,
    )
    policy = by_name["sql-private-ip-only"]
    assert isinstance(policy, ResourceValidationPolicy)
    assert policy.validate is not None and not isinstance(policy.validate, list)
    policy.validate(args, lambda message, urn: reported.append(message))
    assert reported == ["Cloud SQL must have no public IP: set settings.ipConfiguration.ipv4Enabled to false."]
