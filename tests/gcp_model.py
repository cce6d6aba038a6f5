"""A model of one GCP project across a sequence of `pulumi up`s and a `pulumi destroy`, with GCP's constraints.

Pulumi's engine compares each run's inputs with the last applied ones, per URN, and calls the provider only for
what changed; GCP then accepts or refuses. This model does the same over the inputs the mocked program records
(ops.graph), so a sequence of deploys can be checked the way the real one would go: which resources change,
which would be replaced, which executions the migrate job starts, which secret versions survive, and whether
`pulumi destroy` can finish. Each constraint cites where GCP or the provider documents it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ops.graph import Graph, Resource

RUN = "gcp:cloudrunv2"
SERVICE, WORKER_POOL, JOB = f"{RUN}/service:Service", f"{RUN}/workerPool:WorkerPool", f"{RUN}/job:Job"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
REDIS = "gcp:redis/instance:Instance"
BUCKET = "gcp:storage/bucket:Bucket"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
NETWORK = "gcp:compute/network:Network"
PSA = "gcp:servicenetworking/connection:Connection"

#: What each release is meant to replace: Cloud Run revisions (service and pool templates), jobs, the build,
#: and the serverless NEG that routes `candidate.<domain>` to the release's traffic tag (components/edge.py).
RELEASE_SCOPED = frozenset(
    {
        SERVICE,
        WORKER_POOL,
        JOB,
        "docker:index/image:Image",
        "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup",
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
        REPOSITORY,
        NETWORK,
        "gcp:compute/subnetwork:Subnetwork",
        "gcp:compute/globalAddress:GlobalAddress",
        PSA,
    }
)
#: Inputs the API cannot change in place, so a change replaces the resource: identities and placement, plus the
#: ones the APIs document as fixed (a secret's replication "cannot be changed", pulumi-gcp 10.2
#: secretmanager.Secret.replication; "It is not possible to upgrade from Basic Tier to Standard Tier or the other
#: way around", https://cloud.google.com/memorystore/docs/redis/redis-tiers).
REPLACED_BY = {
    SQL: ("name", "region", "project"),
    "gcp:sql/database:Database": ("name", "instance"),
    REDIS: ("name", "region", "tier", "connectMode", "authorizedNetwork", "reservedIpRange"),
    BUCKET: ("name", "location", "project"),
    SECRET: ("secretId", "project", "replication"),
    SECRET_VERSION: ("secret", "secretData"),
    REPOSITORY: ("repositoryId", "location", "format", "project"),
    NETWORK: ("name", "project"),
    "gcp:compute/globalAddress:GlobalAddress": ("name", "prefixLength", "purpose", "network"),
    PSA: ("network", "service"),
}
#: An execution is named `<job>-<token>`: "The sum of job name and token length must be fewer than 63
#: characters" (pulumi-gcp 10.2, cloudrunv2.Job.run_execution_token), and the name is an RFC 1035 label.
EXECUTION_NAME = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")


class RefusedError(Exception):
    """GCP (or the Pulumi engine) refuses the operation; the message says why, as the real error would."""


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
    #: Job name → execution ids that exist (GCP keeps the last 1,000, or 7 days:
    #: https://cloud.google.com/run/docs/execute/jobs).
    executions: dict[str, set[str]] = field(default_factory=dict)
    #: Secret id → version numbers that exist.
    versions: dict[str, set[int]] = field(default_factory=dict)
    #: Secret id → the version the current declaration maps to.
    current: dict[str, int] = field(default_factory=dict)
    #: For every revision that served, the secret versions it reads: each is a rollback target.
    revisions: list[dict[str, int]] = field(default_factory=list)
    #: Resources `pulumi destroy` left in the cloud on purpose (retain_on_delete).
    retained: list[Resource] = field(default_factory=list)
    #: VPC peerings a deleted connection left behind.
    peerings: list[str] = field(default_factory=list)

    def up(self, graph: Graph, migration_fails: bool = False) -> Change:
        """Apply one run of the program. Raises RefusedError where GCP would; a failed migration stops the rollout of
        web and worker (they depend on the migrate job) but its execution, like any, now exists."""
        change = self._diff(graph)
        for urn, paths in change.updated.items():
            resource = graph.by_urn[urn]
            forced = [p for p in paths if p.split(".")[0] in REPLACED_BY.get(resource.type, ())]
            if forced:
                change.replaced.append(urn)
                if resource.type in STATEFUL and resource.type != SECRET_VERSION:
                    raise RefusedError(
                        f"{resource.name}: {', '.join(forced)} changed, which replaces a stateful resource"
                    )
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
        A protected resource stops the whole destroy before anything is deleted."""
        protected = sorted(r.name for r in self.state.values() if r.protect)
        if protected:
            raise RefusedError(f"{protected[0]} is protected; Pulumi refuses to delete it")
        remaining = dict(self.state)
        while remaining:
            leaves = [
                r
                for r in remaining.values()
                if not any(r.urn in o.dependencies or o.parent == r.urn for o in remaining.values() if o is not r)
            ]
            if not leaves:
                raise RefusedError("dependency cycle")
            for resource in sorted(leaves, key=lambda r: r.urn):
                self._delete(resource, remaining)
                del remaining[resource.urn]
        self.state = {}

    def _delete(self, r: Resource, remaining: dict[str, Resource]) -> None:
        if not r.custom:
            return
        if r.protect:
            raise RefusedError(f"{r.name} is protected; Pulumi refuses to delete it")
        if r.retain_on_delete:
            self.retained.append(r)
            return
        settings = r.inputs.get("settings") or {}
        if r.inputs.get("deletionProtection") is True or settings.get("deletionProtectionEnabled") is True:
            raise RefusedError(f"{r.name} has deletion protection")
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
