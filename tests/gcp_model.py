"""A model of one GCP project across a sequence of `pulumi up`s and a `pulumi destroy`, with GCP's constraints.

Pulumi's engine compares each run's inputs with the last applied ones, per URN, and calls the provider only for
what changed; GCP then accepts or refuses. This model does the same over the inputs the mocked program records
(ops.graph), so a sequence of deploys can be checked the way the real one would go: which resources change,
which would be replaced, which executions the migrate job starts, which secret versions survive, and whether
`pulumi destroy` can finish. Each constraint cites where GCP or the provider documents it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alle.migrate import UnknownRevisionError, newer_revision
from ops.graph import Graph, Resource

RUN = "gcp:cloudrunv2"
SERVICE, WORKER_POOL, JOB = f"{RUN}/service:Service", f"{RUN}/workerPool:WorkerPool", f"{RUN}/job:Job"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
SQL_USER = "gcp:sql/user:User"
REDIS = "gcp:redis/instance:Instance"
BUCKET = "gcp:storage/bucket:Bucket"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
NETWORK = "gcp:compute/network:Network"
PSA = "gcp:servicenetworking/connection:Connection"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
RANDOM_ID = "random:index/randomId:RandomId"

#: What each release is meant to replace: Cloud Run revisions (service and pool templates), jobs, the build, the
#: migrate job's token bytes, and the serverless NEG that routes `candidate.<domain>` to the release's traffic tag
#: (components/edge.py).
RELEASE_SCOPED = frozenset(
    {
        SERVICE,
        WORKER_POOL,
        JOB,
        "docker:index/image:Image",
        "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup",
        RANDOM_ID,
    }
)
#: What holds data or addresses that outlive a release.
STATEFUL = frozenset(
    {
        SQL,
        "gcp:sql/database:Database",
        "gcp:sql/user:User",
        REDIS,
        BUCKET,
        SECRET,
        SECRET_VERSION,
        NETWORK,
        SUBNET,
        "gcp:compute/globalAddress:GlobalAddress",
        PSA,
    }
)
#: Inputs whose change replaces the resource, per type: the providers' ForceNew/RequiresReplace fields as Pulumi
#: input paths, derived from their source by tools/force_new.py (which records the versions it read). Fields a
#: provider replaces only on some changes (its "conditional" list, e.g. a subnet's range shrinking) are not applied.
FORCE_NEW = json.loads((Path(__file__).parent / "force_new.json").read_text())
REPLACED_BY: dict[str, tuple[str, ...]] = {t: tuple(e["force_new"]) for t, e in FORCE_NEW["types"].items()}
#: An execution is named `<job>-<token>`: "The sum of job name and token length must be fewer than 63
#: characters" (pulumi-gcp 10.2, cloudrunv2.Job.run_execution_token), and the name is an RFC 1035 label.
EXECUTION_NAME = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")


class RefusedError(Exception):
    """GCP (or the Pulumi engine) refuses the operation; the message says why, as the real error would."""


def mock_hex(random_id: Resource) -> str:
    """The bytes ops/mocks.py hands every run for this RandomId; the model swaps in the ones the engine keeps."""
    return hashlib.sha256(random_id.name.encode()).hexdigest()[: 2 * int(random_id.inputs["byteLength"])]


@dataclass
class Change:
    created: list[str] = field(default_factory=list)
    #: URN → the input paths that differ.
    updated: dict[str, list[str]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


def _paths(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and set(value) != {"secret"}:
        for key, inner in value.items():
            yield from _paths(inner, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, value


def value_at(value: Any, path: str) -> Any:
    """The value under a dotted input path; through a list, the list of each element's value."""
    for i, key in enumerate(path.split(".")):
        if isinstance(value, list):
            rest = ".".join(path.split(".")[i:])
            return [value_at(element, rest) for element in value]
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def forcing_paths(typ: str, before: dict[str, Any], after: dict[str, Any], ignored: list[str]) -> list[str]:
    """The inputs whose change replaces a resource of this type, among those that changed."""
    return [
        path
        for path in REPLACED_BY[typ]
        if value_at(before, path) != value_at(after, path)
        and not any(path == i or path.startswith(f"{i}.") for i in ignored)
    ]


def changed_paths(before: dict[str, Any], after: dict[str, Any], ignored: list[str]) -> list[str]:
    """Input paths whose value differs, except those under ignore_changes (GCP owns them)."""
    a, b = dict(_paths(before)), dict(_paths(after))
    differing = sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))
    return [p for p in differing if not any(p == i or p.startswith(f"{i}.") for i in ignored)]


@dataclass
class Project:
    """One stack's project as GCP holds it between deploys."""

    stack: str
    state: dict[str, Resource] = field(default_factory=dict)
    #: Job name → execution ids that exist; a token that named one is refused, and after `pulumi refresh` the API
    #: reports the token cleared (hashicorp/terraform-provider-google#24451; the provider's Read takes the token from
    #: the API, terraform-provider-google-beta resource_cloud_run_v2_job.go, flattenCloudRunV2JobRunExecutionToken).
    executions: dict[str, set[str]] = field(default_factory=dict)
    #: Secret id → version numbers that exist.
    versions: dict[str, set[int]] = field(default_factory=dict)
    #: Secret id → the version the current declaration maps to.
    current: dict[str, int] = field(default_factory=dict)
    #: For every revision that served, the secret versions it reads: each is a rollback target.
    revisions: list[dict[str, int]] = field(default_factory=list)
    #: What `pulumi destroy` deleted in the cloud, in order.
    deleted: list[Resource] = field(default_factory=list)
    #: VPC peerings a deleted connection left behind.
    peerings: list[str] = field(default_factory=list)
    #: Image → the Alembic revisions it has, oldest first; the database's revisions, as alembic_version holds them.
    migrations: dict[str, list[str]] = field(default_factory=dict)
    schema: list[str] = field(default_factory=list)
    #: RandomId URN → the bytes the engine keeps in state.
    random: dict[str, str] = field(default_factory=dict)
    #: Subnets whose IP addresses Cloud Run still holds after its resources using Direct VPC egress were deleted:
    #: "wait 1-2 hours for Cloud Run to release the IP addresses before you delete the subnet"
    #: (https://cloud.google.com/run/docs/configuring/vpc-direct-vpc#delete-subnet; fabric PR #2867).
    held_subnets: set[str] = field(default_factory=set)

    def up(self, graph: Graph, migration_fails: bool = False, replace: Sequence[str] = ()) -> Change:
        """Apply one run of the program (`pulumi up --replace URN` for each of `replace`). Raises RefusedError where
        GCP would; a failed migration stops the rollout of web and worker (they depend on the migrate job) but its
        execution, like any, now exists."""
        graph = self._resolve_random(graph, replace)
        change = self._diff(graph)
        for urn in change.updated:
            resource = graph.by_urn[urn]
            forced = forcing_paths(resource.type, self.state[urn].inputs, resource.inputs, resource.ignore_changes)
            if forced:
                change.replaced.append(urn)
                if resource.type in STATEFUL and resource.type != SECRET_VERSION:
                    raise RefusedError(
                        f"{resource.name}: {', '.join(forced)} changed, which replaces a stateful resource"
                    )
        change.replaced.extend(urn for urn in replace if urn in self.state and urn not in change.replaced)
        self._run_release_job(graph, change, migration_fails)
        self._rotate_secrets(graph, change)
        if migration_fails:
            # Everything but what waits for the migrate job is applied; web and worker keep their revision.
            held = (SERVICE, WORKER_POOL)
            kept = {urn: r for urn, r in self.state.items() if r.type in held}
            self.state = kept | {r.urn: r for r in graph.resources if r.type not in held}
            raise RefusedError("the migrate execution failed; web and worker keep serving the previous revision")
        self.state = {r.urn: r for r in graph.resources}
        self.revisions.append(dict(self.current))
        return change

    def _resolve_random(self, graph: Graph, replace: Sequence[str]) -> Graph:
        """The engine's part: a RandomId keeps its bytes until its keepers change or it is replaced, and what reads
        its `hex` (the migrate job's token) sees those bytes, not the mock's."""
        resolved = deepcopy(graph)
        for random_id in resolved.of_type(RANDOM_ID):
            before = self.state.get(random_id.urn)
            kept = (
                before is not None
                and random_id.urn not in replace
                and before.inputs.get("keepers") == random_id.inputs.get("keepers")
            )
            actual = self.random[random_id.urn] if kept else secrets.token_hex(int(random_id.inputs["byteLength"]))
            self.random[random_id.urn] = actual
            mock = mock_hex(random_id)
            for job in resolved.of_type(JOB):
                token = job.inputs.get("runExecutionToken")
                if token and random_id.urn in job.dependencies and token.endswith(mock):
                    job.inputs["runExecutionToken"] = token.removesuffix(mock) + actual
        return resolved

    def _diff(self, graph: Graph) -> Change:
        change = Change()
        for resource in graph.resources:
            before = self.state.get(resource.urn)
            if before is None:
                change.created.append(resource.urn)
                continue
            paths = changed_paths(before.inputs, resource.inputs, resource.ignore_changes)
            if paths:
                change.updated[resource.urn] = paths
        change.deleted = [urn for urn in self.state if urn not in graph.by_urn]
        return change

    def _run_release_job(self, graph: Graph, change: Change, fails: bool) -> None:
        for job in graph.of_type(JOB):
            token = job.inputs.get("runExecutionToken")
            before = self.state.get(job.urn)
            if not token or (before is not None and before.inputs.get("runExecutionToken") == token):
                continue  # no new token: the API starts no execution
            name = job.inputs["name"]
            if len(name) + len(token) >= 63:
                raise RefusedError(
                    f"{name}: job name and token are {len(name) + len(token)} characters, not fewer than 63"
                )
            execution = f"{name}-{token}"
            if not EXECUTION_NAME.match(execution):
                raise RefusedError(f"{execution!r} is not a valid execution id (lowercase letters, digits and '-')")
            if execution in self.executions.setdefault(name, set()):
                raise RefusedError(f"execution {execution} already exists")
            self.executions[name].add(execution)
            if not fails:
                self._migrate(job)

    def _migrate(self, job: Resource) -> None:
        """`alle migrate` from the job's image against the database, decided by the app's own rule
        (alle.migrate.newer_revision): upgrade to the image's head, or leave a newer schema as it is."""
        image = job.inputs["template"]["template"]["containers"][0]["image"]
        known = self.migrations.get(image)
        if known is None:
            return
        try:
            newer = newer_revision(known, self.schema)
        except UnknownRevisionError as error:
            raise RefusedError(f"alle migrate failed: the database is at {error}, unknown to {image}") from None
        if newer is None:
            self.schema = [known[-1]]

    def _rotate_secrets(self, graph: Graph, change: Change) -> None:
        """A SecretVersion whose data changed is replaced: a new version is added, and the old one is deleted
        unless its deletion policy says otherwise (pulumi-gcp 10.2, secretmanager.SecretVersion.deletion_policy)."""
        for version in graph.of_type(SECRET_VERSION):
            secret = version.inputs["secret"]
            alive = self.versions.setdefault(secret, set())
            if version.urn in change.created:
                self.current[secret] = max(alive, default=0) + 1
                alive.add(self.current[secret])
            elif version.urn in change.replaced:
                old = self.current[secret]
                self.current[secret] = old + 1
                alive.add(old + 1)
                if version.inputs.get("deletionPolicy") not in ("ABANDON", "DISABLE"):
                    alive.discard(old)
                # DISABLE keeps it, but a disabled version cannot be read either.
                if version.inputs.get("deletionPolicy") == "DISABLE":
                    alive.discard(old)
        for revision in self.revisions:
            for secret, number in revision.items():
                if number not in self.versions.get(secret, set()):
                    raise RefusedError(f"{secret} version {number} is gone, yet a revision that served reads it")

    def manual_run(self, job_name: str) -> str:
        """`alle-ops job run` (jobs.run): an execution with a generated id."""
        execution = f"{job_name}-{secrets.token_hex(3)[:5]}"
        self.executions.setdefault(job_name, set()).add(execution)
        return execution

    def refresh(self) -> None:
        """`pulumi refresh` after a manual run: the API reports the job's token cleared."""
        for urn, resource in self.state.items():
            if resource.type == JOB and resource.inputs.get("runExecutionToken"):
                inputs = {**resource.inputs, "runExecutionToken": ""}
                self.state[urn] = Resource(**{**resource.__dict__, "inputs": inputs})

    def destroy(self) -> None:
        """`pulumi destroy`: dependents first, as the engine orders deletes; each delete checked as GCP would.
        A protected resource stops the whole destroy before anything is deleted. A delete GCP refuses for now (a
        subnet Cloud Run still holds) keeps that resource and what depends on it in the state; the rest goes."""
        protected = sorted(r.name for r in self.state.values() if r.protect)
        if protected:
            raise RefusedError(f"{protected[0]} is protected; Pulumi refuses to delete it")
        remaining = dict(self.state)
        failed: dict[str, str] = {}
        while remaining:
            leaves = [
                r
                for r in remaining.values()
                if r.urn not in failed
                and not any(r.urn in o.dependencies or o.parent == r.urn for o in remaining.values() if o is not r)
            ]
            if not leaves:
                if failed:
                    break
                raise RefusedError("dependency cycle")
            for resource in sorted(leaves, key=lambda r: r.urn):
                try:
                    self._delete(resource, remaining)
                except HeldError as held:
                    failed[resource.urn] = str(held)
                    continue
                del remaining[resource.urn]
        self.state = remaining
        if failed:
            raise HeldError(next(iter(failed.values())))

    def addresses_released(self) -> None:
        """1–2 hours later: Cloud Run has released the subnet's addresses."""
        self.held_subnets.clear()

    def _delete(self, r: Resource, remaining: dict[str, Resource]) -> None:
        if not r.custom:
            return
        if r.protect:
            raise RefusedError(f"{r.name} is protected; Pulumi refuses to delete it")
        settings = r.inputs.get("settings") or {}
        if r.inputs.get("deletionProtection") is True or settings.get("deletionProtectionEnabled") is True:
            raise RefusedError(f"{r.name} has deletion protection")
        if r.type in (SERVICE, WORKER_POOL, JOB):
            # Direct VPC egress: the subnet's addresses stay reserved for 1–2 hours after the resource is gone.
            subnets = [urn for urn in r.dependencies if urn in remaining and remaining[urn].type == SUBNET]
            self.held_subnets.update(subnets)
        if r.type == SUBNET and r.urn in self.held_subnets:
            raise HeldError(
                f"{r.name}: resourceInUseByAnotherResource, Cloud Run still holds its addresses; "
                "run `pulumi destroy` again in 1–2 hours"
            )
        if r.type == BUCKET and r.inputs.get("forceDestroy") is not True:
            # The uploads bucket holds objects: "buckets with objects/caches will fail" (storage.Bucket).
            raise RefusedError(f"{r.name} still holds objects and forceDestroy is off")
        if r.type == PSA:
            # "Use it only once every service instance reachable through the connection has already been
            # deleted"; ABANDON leaves the peering, "which will block deletion of the network"
            # (servicenetworking.Connection, "Deleting a connection").
            users = [o.name for o in remaining.values() if o.type in (SQL, REDIS) and r.urn in o.dependencies]
            if users:
                raise RefusedError(f"{r.name} is deleted while {', '.join(users)} still use it")
            policy = r.inputs.get("deletionPolicy")
            if policy == "ABANDON":
                self.peerings.append(r.name)
            elif policy != "REMOVE_PEERING":
                # Cloud SQL keeps its producer resources after the instance is deleted, so it can be restored;
                # "until they are released, deleting the connection fails".
                raise RefusedError(f"{r.name}: the service producer still holds resources in the peered range")
        if r.type == NETWORK and self.peerings:
            raise RefusedError(f"{r.name} cannot be deleted: a VPC peering ({self.peerings[0]}) still references it")
        if r.type == SQL_USER and r.inputs.get("deletionPolicy") != "ABANDON":
            # The migrate job ran as this user, so it owns the app's tables: "A role cannot be removed if it is still
            # referenced in any database" (https://www.postgresql.org/docs/16/sql-droprole.html).
            instance = [o for o in remaining.values() if o.type == SQL and o.urn in r.dependencies]
            if instance and any(name.endswith("-migrate") and runs for name, runs in self.executions.items()):
                raise RefusedError(f"{r.name}: role cannot be dropped because some objects depend on it")
        if r.type == SQL_USER and r.inputs.get("deletionPolicy") == "ABANDON":
            return  # left to its instance, whose deletion takes it along
        self.deleted.append(r)


class HeldError(RefusedError):
    """GCP refuses the delete for now; the same delete succeeds later."""
