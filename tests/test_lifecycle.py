"""The release lifecycle as operators and CI run it, through a model of GCP (tests/gcp_model.py).

Staging: first deploy, the same deploy again (a no-op), a scale-only deploy, the next release (which adds a
migration), a release whose migration fails and its retry, a secret rotation, a manual migrate run followed by
`pulumi refresh` and the documented retry, then `pulumi destroy` (twice: Cloud Run holds the subnet for 1–2
hours). Production: first deploy of a promoted release, promotion of the next one (with its migration), a
rollback across that migration to the first, then `pulumi destroy`. Release ids come in the three forms the team
uses: a full commit SHA, a version and a timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass

import pytest
from gcp_model import (
    BUCKET,
    JOB,
    NETWORK,
    PSA,
    REDIS,
    RELEASE_SCOPED,
    SECRET_VERSION,
    SERVICE,
    SQL,
    SQL_USER,
    STATEFUL,
    SUBNET,
    Change,
    HeldError,
    Project,
    RefusedError,
)

from ops.graph import Graph, Resource
from ops.migrate import token_urn
from stacks import deployed

#: The sequence makes seven distinct program runs (about 8 s of CPU, forked from tests/stacks.py's server); on a
#: machine shared with other jobs its first test waits for all of them, so it gets more than the default 120 s.
pytestmark = pytest.mark.timeout(300)

SHA = "3f5e2a9c0d1b4e6f8a7c9b0d2e4f6a8c1b3d5e7f"
VERSION = "v1.2.3"
STAMP = "2024-01-15T10:30:00Z"
REGISTRY = "europe-west1-docker.pkg.dev/alle-registry/alle/alle@sha256:"
DIGESTS = {SHA: REGISTRY + "ab" * 32, VERSION: REGISTRY + "cd" * 32}
#: The Alembic revisions each release's image has: the next release (VERSION) adds one.
MIGRATIONS = {SHA: ["0001"], VERSION: ["0001", "0002"], STAMP: ["0001", "0002"]}


def _staging(release: str, **more: str) -> Callable[[], Graph]:
    return lambda: deployed("staging", {"alle:release": release, **more})


def _production(release: str) -> Callable[[], Graph]:
    return lambda: deployed("production", {"alle:release": release, "alle:image": DIGESTS[release]})


#: Every run of the program the sequence needs, with its release; each is its own `pulumi up`.
RUNS: dict[str, tuple[str, Callable[[], Graph]]] = {
    "staging first deploy": (SHA, _staging(SHA)),
    "staging no-op": (SHA, _staging(SHA)),
    "staging scale-only": (SHA, _staging(SHA, **{"alle:webMinInstances": "1"})),
    "staging next release": (VERSION, _staging(VERSION)),
    "staging failing migration": (STAMP, _staging(STAMP)),
    "staging retried migration": (STAMP, _staging(STAMP)),
    "staging rotated secret": (STAMP, _staging(STAMP, **{"alle:mailApiKey": "SG.rotated-key"})),
    "staging deploy after refresh": (STAMP, _staging(STAMP, **{"alle:mailApiKey": "SG.rotated-key"})),
    "production first deploy": (SHA, _production(SHA)),
    "production promotion": (VERSION, _production(VERSION)),
    "production rollback": (SHA, _production(SHA)),
}


@dataclass
class Outcome:
    change: Change | None = None
    refused: str | None = None

    def ok(self) -> Change:
        assert self.refused is None, self.refused
        assert self.change is not None
        return self.change


def _attempt(action: Callable[[], Change | None]) -> Outcome:
    try:
        return Outcome(change=action())
    except RefusedError as refused:
        return Outcome(refused=str(refused))


@dataclass
class Sequence:
    graphs: dict[str, Graph]
    outcomes: dict[str, Outcome]
    projects: dict[str, Project]
    #: The migrate job's token as GCP got it after each step.
    tokens: dict[str, str]
    #: The image web served after each step.
    served: dict[str, str]
    #: What the first `pulumi destroy --stack staging` left.
    left_by_first_destroy: list[str]


def _migrations(graphs: dict[str, Graph]) -> dict[str, list[str]]:
    return {
        _migrate(graphs[step]).inputs["template"]["template"]["containers"][0]["image"]: MIGRATIONS[release]
        for step, (release, _) in RUNS.items()
    }


@pytest.fixture(scope="module")
def sequence() -> Sequence:
    with ThreadPoolExecutor(max_workers=3) as pool:
        graphs = dict(zip(RUNS, pool.map(lambda run: run[1](), RUNS.values()), strict=True))
    migrations = _migrations(graphs)
    staging, production = Project("staging", migrations=migrations), Project("production", migrations=migrations)
    outcomes: dict[str, Outcome] = {}
    tokens: dict[str, str] = {}
    served: dict[str, str] = {}

    def up(project: Project, step: str, migration_fails: bool = False, replace: tuple[str, ...] = ()) -> None:
        outcomes[step] = _attempt(lambda: project.up(graphs[step], migration_fails=migration_fails, replace=replace))
        [job] = [r for r in project.state.values() if r.type == JOB and r.inputs["name"].endswith("-migrate")]
        tokens[step] = job.inputs["runExecutionToken"]
        served[step] = _image(project.state, SERVICE)

    retry = (token_urn("staging"),)  # `alle-ops migrate retry --stack staging`
    up(staging, "staging first deploy")
    up(staging, "staging no-op")
    up(staging, "staging scale-only")
    up(staging, "staging next release")
    up(staging, "staging failing migration", migration_fails=True)
    up(staging, "staging retried migration", replace=retry)
    up(staging, "staging rotated secret")
    staging.manual_run("alle-staging-migrate")
    staging.refresh()
    up(staging, "staging deploy after refresh", replace=retry)
    for step in ("production first deploy", "production promotion", "production rollback"):
        up(production, step)
    outcomes["staging destroy"] = _attempt(staging.destroy)
    left = sorted(r.type for r in staging.state.values() if r.custom)
    staging.addresses_released()
    outcomes["staging destroy again"] = _attempt(staging.destroy)
    outcomes["production destroy"] = _attempt(production.destroy)
    return Sequence(graphs, outcomes, {"staging": staging, "production": production}, tokens, served, left)


def _image(state: dict[str, Resource], typ: str) -> str:
    [resource] = [r for r in state.values() if r.type == typ]
    return str(resource.inputs["template"]["containers"][0]["image"])


def _migrate(graph: Graph) -> Resource:
    return next(j for j in graph.of_type(JOB) if j.inputs["name"].endswith("-migrate"))


def test_first_deploy_of_production_with_a_full_commit_sha_starts_its_migration(sequence: Sequence) -> None:
    sequence.outcomes["production first deploy"].ok()
    token = sequence.tokens["production first deploy"]
    assert len("alle-production-migrate") + len(token) < 63
    assert token.startswith(SHA[:20])
    assert f"alle-production-migrate-{token}" in sequence.projects["production"].executions["alle-production-migrate"]


@pytest.mark.parametrize("step", ["staging no-op", "staging scale-only"])
def test_a_deploy_of_the_same_release_starts_no_migration_and_leaves_the_job_alone(
    sequence: Sequence, step: str
) -> None:
    change = sequence.outcomes[step].ok()
    graph = sequence.graphs[step]
    migrate = _migrate(graph).urn
    assert migrate not in change.updated and migrate not in change.replaced
    assert sequence.tokens[step] == sequence.tokens["staging first deploy"]
    changed = {graph.by_urn[urn].type for urn in change.updated}
    assert changed == (set() if step == "staging no-op" else {SERVICE}), changed


def test_only_releases_start_migrations_in_staging(sequence: Sequence) -> None:
    """First deploy, next release, the failed one, its retry, the retry after refresh: no-op, scale-only and the
    secret rotation start none (a manual run is the sixth)."""
    assert len(sequence.projects["staging"].executions["alle-staging-migrate"]) == 6


@pytest.mark.parametrize(
    ("stack", "step"), [("staging", "staging next release"), ("production", "production promotion")]
)
def test_a_new_release_changes_only_release_scoped_resources(sequence: Sequence, stack: str, step: str) -> None:
    change = sequence.outcomes[step].ok()
    graph = sequence.graphs[step]
    changed = {graph.by_urn[urn].type for urn in change.updated}
    assert not change.created and not change.deleted
    assert changed <= RELEASE_SCOPED, changed - RELEASE_SCOPED
    assert not changed & STATEFUL


def test_a_rollback_across_a_migration_starts_a_new_execution_and_keeps_the_newer_schema(sequence: Sequence) -> None:
    change = sequence.outcomes["production rollback"].ok()
    graph = sequence.graphs["production rollback"]
    assert {graph.by_urn[urn].type for urn in change.updated} <= RELEASE_SCOPED
    production = sequence.projects["production"]
    executions = production.executions["alle-production-migrate"]
    assert len(executions) == 3  # first deploy, promotion, rollback: three tokens, none reused
    assert sequence.tokens["production rollback"] != sequence.tokens["production first deploy"]
    assert sequence.served["production rollback"] == DIGESTS[SHA]
    assert production.schema == ["0002"], "the older image left the promotion's schema as it was"


def test_a_failed_migration_keeps_the_previous_revision_serving(sequence: Sequence) -> None:
    assert sequence.outcomes["staging failing migration"].refused == (
        "the migrate execution failed; web and worker keep serving the previous revision"
    )
    assert sequence.served["staging failing migration"] == _image(
        {r.urn: r for r in sequence.graphs["staging next release"].resources}, SERVICE
    )


def test_retrying_a_failed_migration_is_one_command_that_starts_a_new_execution(sequence: Sequence) -> None:
    sequence.outcomes["staging retried migration"].ok()
    first, retry = sequence.tokens["staging failing migration"], sequence.tokens["staging retried migration"]
    assert first != retry and first.rsplit("-", 1)[0] == retry.rsplit("-", 1)[0]
    retried = {r.urn: r for r in sequence.graphs["staging retried migration"].resources}
    assert sequence.served["staging retried migration"] == _image(retried, SERVICE)


def test_a_deploy_after_a_manual_run_and_refresh_is_accepted(sequence: Sequence) -> None:
    sequence.outcomes["staging deploy after refresh"].ok()


def test_a_secret_rotation_keeps_every_version_a_serving_or_rollback_revision_reads(sequence: Sequence) -> None:
    change = sequence.outcomes["staging rotated secret"].ok()
    graph = sequence.graphs["staging rotated secret"]
    rotated = [graph.by_urn[urn].name for urn in change.replaced]
    assert rotated == ["alle-staging-mail-api-key-v"]
    staging = sequence.projects["staging"]
    [mail_secret] = [s for s in staging.versions if s.endswith("alle-staging-mail-api-key-id")]
    assert staging.versions[mail_secret] == {1, 2}
    assert not {graph.by_urn[urn].type for urn in change.updated} & (STATEFUL - {SECRET_VERSION})


def test_destroy_of_staging_takes_two_runs_because_cloud_run_holds_the_subnet(sequence: Sequence) -> None:
    refused = sequence.outcomes["staging destroy"].refused
    assert refused is not None and "run `pulumi destroy` again in 1–2 hours" in refused
    # The network, its subnet, and the APIs they were created after (which destroy never disables).
    assert set(sequence.left_by_first_destroy) == {NETWORK, SUBNET, "gcp:projects/service:Service"}
    assert sequence.left_by_first_destroy.count(SUBNET) == 1
    assert sequence.outcomes["staging destroy again"].refused is None
    staging = sequence.projects["staging"]
    assert staging.state == {}


def test_destroying_staging_deletes_no_image_production_runs_or_rolls_back_to(sequence: Sequence) -> None:
    """The registry is bootstrap's, in its own project: staging's state never holds it, and its build's docker.Image
    deletes no tag ("This resource does not delete tags, locally or remotely, when destroyed", pulumi-docker 5.2)."""
    deleted = sequence.projects["staging"].deleted
    assert [r.name for r in deleted if r.type.startswith("gcp:artifactregistry/")] == []
    assert {r.type for r in deleted} >= {SQL, REDIS, BUCKET, NETWORK}, "the destroy did run"
    ran = {sequence.served[step] for step in RUNS if step.startswith("production")}
    assert ran == set(DIGESTS.values())
    assert all(image.startswith(REGISTRY) for image in ran)


def test_destroy_of_production_is_refused_before_it_deletes_data(sequence: Sequence) -> None:
    refused = sequence.outcomes["production destroy"].refused
    assert refused is not None and refused.endswith("is protected; Pulumi refuses to delete it")


# The model itself: each constraint refuses what GCP would refuse, so the sequence above could fail.


def _edited(graph: Graph, typ: str, **inputs: object) -> Graph:
    copy = deepcopy(graph)
    for resource in copy.of_type(typ):
        resource.inputs.update(inputs)
    return copy


def test_the_model_refuses_a_token_used_before_so_a_plain_up_after_refresh_would_fail(sequence: Sequence) -> None:
    graph = sequence.graphs["staging first deploy"]
    project = Project("staging")
    project.up(graph)
    project.refresh()
    with pytest.raises(RefusedError, match=r"execution alle-staging-migrate-.* already exists"):
        project.up(graph)


def test_the_model_keeps_a_random_ids_bytes_until_its_keepers_change_or_it_is_replaced(sequence: Sequence) -> None:
    project = Project("staging")
    project.up(sequence.graphs["staging first deploy"])
    first = dict(project.random)
    project.up(sequence.graphs["staging no-op"])
    assert project.random == first
    project.up(sequence.graphs["staging no-op"], replace=(token_urn("staging"),))
    assert project.random[token_urn("staging")] != first[token_urn("staging")]


def test_the_model_refuses_an_image_that_does_not_know_the_databases_revision(sequence: Sequence) -> None:
    migrations = _migrations(sequence.graphs)
    project = Project("production", migrations=migrations, schema=["abcd"])
    with pytest.raises(RefusedError, match="alle migrate failed: the database is at abcd"):
        project.up(sequence.graphs["production first deploy"])


def test_the_model_refuses_a_job_name_and_token_of_63_characters(sequence: Sequence) -> None:
    graph = sequence.graphs["production first deploy"]
    long_token = _edited(graph, JOB)
    _migrate(long_token).inputs["runExecutionToken"] = SHA
    with pytest.raises(RefusedError, match="job name and token are 63 characters, not fewer than 63"):
        Project("production").up(long_token)


def test_the_model_refuses_replacing_a_stateful_resource(sequence: Sequence) -> None:
    graph = sequence.graphs["staging first deploy"]
    project = Project("staging")
    project.up(graph)
    with pytest.raises(RefusedError, match="alle-staging-redis: tier changed, which replaces a stateful resource"):
        project.up(_edited(sequence.graphs["staging next release"], REDIS, tier="STANDARD_HA"))


def test_the_model_refuses_a_rotation_that_deletes_a_version_in_use(sequence: Sequence) -> None:
    project = Project("staging")
    project.up(sequence.graphs["staging retried migration"])
    rotated = _edited(sequence.graphs["staging rotated secret"], SECRET_VERSION, deletionPolicy="DELETE")
    with pytest.raises(RefusedError, match=r"alle-staging-mail-api-key-id version 1 is gone, yet a revision"):
        project.up(rotated)


@pytest.mark.parametrize(
    ("typ", "inputs", "message"),
    [
        (PSA, {"deletionPolicy": "ABANDON"}, "alle-staging-vpc cannot be deleted: a VPC peering"),
        (PSA, {"deletionPolicy": "DELETE"}, "the service producer still holds resources"),
        (BUCKET, {"forceDestroy": False}, "alle-staging-uploads still holds objects"),
        (SQL_USER, {"deletionPolicy": "DELETE"}, "alle-staging-user: role cannot be dropped because some objects"),
    ],
)
def test_the_model_refuses_a_staging_destroy_that_gcp_would_stop(
    sequence: Sequence, typ: str, inputs: dict[str, object], message: str
) -> None:
    project = Project("staging")
    project.up(_edited(sequence.graphs["staging first deploy"], typ, **inputs))
    with pytest.raises(RefusedError, match=message):
        try:
            project.destroy()
        except HeldError:  # the subnet, 1–2 hours: then the destroy that matters here
            project.addresses_released()
            project.destroy()
