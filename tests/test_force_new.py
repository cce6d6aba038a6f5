"""The replacement table the lifecycle model uses (tests/force_new.json, from tools/force_new.py) is complete for
this program and names real inputs, and the model replaces exactly on those inputs."""

from __future__ import annotations

import importlib
import inspect
import warnings
from copy import deepcopy

import pytest
from gcp_model import FORCE_NEW, RELEASE_SCOPED, REPLACED_BY, STATEFUL, Project, RefusedError

from ops.graph import Graph
from stacks import deployed

SQL_USER = "gcp:sql/user:User"
SUBNET = "gcp:compute/subnetwork:Subnetwork"


@pytest.fixture(scope="module")
def with_options() -> Graph:
    """Production with the optional resources too: a budget and Cloud DNS records."""
    return deployed("production", {"alle:billingAccount": "012345-6789AB-CDEF01", "alle:dnsZone": "alle-app"})


def test_the_table_covers_every_resource_type_the_program_registers(
    staging: Graph, production: Graph, with_options: Graph
) -> None:
    registered = {r.type for g in (staging, production, with_options) for r in g.custom()}
    assert {"gcp:billing/budget:Budget", "gcp:dns/recordSet:RecordSet"} <= registered
    assert registered - set(REPLACED_BY) == set()
    assert (STATEFUL | RELEASE_SCOPED) - set(REPLACED_BY) == set()


def test_the_table_records_the_provider_versions_it_was_derived_from() -> None:
    sources = FORCE_NEW["sources"]
    assert sources["hashicorp/terraform-provider-google-beta"]["tag"] == "v7.45.0"
    assert all(len(s["commit"]) == 40 for s in sources.values())
    assert all(entry["source"] for entry in FORCE_NEW["types"].values())


def _inputs(cls: type) -> dict[str, property]:
    """Pulumi input name → property of an Args class."""
    props = [p for _, p in inspect.getmembers(cls) if isinstance(p, property)]
    return {getattr(p.fget, "_pulumi_name", ""): p for p in props}


@pytest.mark.parametrize("typ", sorted(t for t in REPLACED_BY if t.split(":")[0] in ("gcp", "random", "time")))
def test_every_path_in_the_table_starts_with_an_input_of_the_pulumi_sdk(typ: str) -> None:
    provider, rest = typ.split(":", 1)
    module, name = rest.split("/")[0], rest.split(":")[1]
    package = {"gcp": "pulumi_gcp", "random": "pulumi_random", "time": "pulumiverse_time"}[provider]
    with warnings.catch_warnings():
        # Loading a pulumi_gcp module (lazily, on first attribute) announces the deprecation of some of its functions.
        warnings.simplefilter("ignore", DeprecationWarning)
        sdk = importlib.import_module(package if module == "index" else f"{package}.{module}")
        args = getattr(sdk, f"{name}Args")
    inputs = _inputs(args)
    assert {p.split(".")[0] for p in REPLACED_BY[typ]} <= set(inputs), typ


def test_the_table_has_the_fields_the_hand_written_one_missed() -> None:
    assert {"instance", "name", "host", "type"} <= set(REPLACED_BY[SQL_USER])
    assert {"name", "network", "region"} <= set(REPLACED_BY[SUBNET])
    assert "ipCidrRange" not in REPLACED_BY[SUBNET], "it only replaces when the range shrinks"
    assert "ipCidrRange" in FORCE_NEW["types"][SUBNET]["conditional"]


def _edited(graph: Graph, typ: str, path: str, value: object) -> Graph:
    copy = deepcopy(graph)
    for resource in copy.of_type(typ):
        *parents, last = path.split(".")
        target = resource.inputs
        for key in parents:
            target = target[key]
        target[last] = value
    return copy


def test_the_model_changes_a_sql_users_password_in_place_but_refuses_renaming_it(staging: Graph) -> None:
    project = Project("staging")
    project.up(staging)
    change = project.up(_edited(staging, SQL_USER, "password", "another-password"))
    [user] = staging.of_type(SQL_USER)
    assert user.urn in change.updated and user.urn not in change.replaced
    with pytest.raises(RefusedError, match="alle-staging-user: name changed, which replaces a stateful resource"):
        project.up(_edited(staging, SQL_USER, "name", "someone-else"))


def test_the_model_refuses_moving_the_direct_vpc_subnet_to_another_region(staging: Graph) -> None:
    project = Project("staging")
    project.up(staging)
    with pytest.raises(RefusedError, match="alle-staging-run: region changed, which replaces a stateful resource"):
        project.up(_edited(staging, SUBNET, "region", "europe-west4"))
