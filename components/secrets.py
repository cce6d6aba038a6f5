"""Secret Manager: one secret per app secret, a version holding its value, access granted per secret."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random


@dataclass
class SecretRef:
    """What a Cloud Run container needs to mount a secret as env: its id and a pinned version number."""

    secret: pulumi.Output[str]
    version: pulumi.Output[str]


@dataclass
class SecretsArgs:
    project: str
    prefix: str
    #: env name → secret value (already a secret Output).
    values: dict[str, pulumi.Input[str]]
    #: The identities that read these secrets (the app's runtime service accounts).
    readers: Sequence[pulumi.Input[str]]
    labels: dict[str, str]
    depends_on: list[pulumi.Resource]
    #: env names whose value is generated here (random, 64 characters) rather than passed in.
    generated: list[str] = field(default_factory=list)


def secret_id(prefix: str, env_name: str) -> str:
    return f"{prefix}-{env_name.lower().replace('_', '-')}"


class Secrets(pulumi.ComponentResource):
    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:secrets:Secrets", name, None, opts)
        self.refs: dict[str, SecretRef] = {}
        #: Everything a workload must wait for before it may read the secrets: versions and grants.
        self.ready: list[pulumi.Resource] = []
        #: The access grants alone.
        self.grants: list[pulumi.Resource] = []
        values = dict(args.values)
        for env_name in args.generated:
            values[env_name] = random.RandomPassword(
                f"{name}-{env_name.lower().replace('_', '-')}-value",
                random.RandomPasswordArgs(length=64, special=False),
                opts=pulumi.ResourceOptions(parent=self),
            ).result
        for env_name, value in values.items():
            key = env_name.lower().replace("_", "-")
            secret = gcp.secretmanager.Secret(
                f"{name}-{key}",
                gcp.secretmanager.SecretArgs(
                    project=args.project,
                    secret_id=secret_id(args.prefix, env_name),
                    replication=gcp.secretmanager.SecretReplicationArgs(
                        auto=gcp.secretmanager.SecretReplicationAutoArgs()
                    ),
                    labels=args.labels,
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
            )
            version = gcp.secretmanager.SecretVersion(
                f"{name}-{key}-v",
                gcp.secretmanager.SecretVersionArgs(
                    secret=secret.id,
                    secret_data=pulumi.Output.secret(value),
                    # A new value replaces this resource. With the default DELETE the old version would be destroyed
                    # while the serving revision and every rollback target still pin it; ABANDON leaves it in Secret
                    # Manager, enabled, until an operator disables it (README: rotating a secret). pulumi-gcp 10.2,
                    # secretmanager.SecretVersion.deletion_policy.
                    deletion_policy="ABANDON",
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            grants = [
                gcp.secretmanager.SecretIamMember(
                    f"{name}-{key}-reader-{index}",
                    gcp.secretmanager.SecretIamMemberArgs(
                        project=args.project,
                        secret_id=secret.secret_id,
                        role="roles/secretmanager.secretAccessor",
                        member=member,
                    ),
                    opts=pulumi.ResourceOptions(parent=self),
                )
                for index, member in enumerate(args.readers)
            ]
            # Cloud Run gets this version's number, never "latest": a new value takes a new release.
            self.refs[env_name] = SecretRef(secret=secret.secret_id, version=version.version)
            self.ready += [version, *grants]
            self.grants += grants
        self.register_outputs({"secrets": {k: ref.secret for k, ref in self.refs.items()}})
