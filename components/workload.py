"""What every Cloud Run workload of a release shares: the image, the env contract, secrets, the VPC path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.secrets import SecretRef

#: Set by gcloud or the console when someone deploys by hand; GCP owns them, this program does not.
GCP_OWNED = ["client", "clientVersion"]

#: Set by Cloud Run itself, or refused by it.
RESERVED_ENV = frozenset(
    {
        "PORT",
        "K_SERVICE",
        "K_REVISION",
        "K_CONFIGURATION",
        "CLOUD_RUN_JOB",
        "CLOUD_RUN_EXECUTION",
        "CLOUD_RUN_TASK_INDEX",
        "CLOUD_RUN_TASK_ATTEMPT",
        "CLOUD_RUN_TASK_COUNT",
        "CLOUD_RUN_WORKER_POOL",
    }
)


@dataclass
class Workload:
    image: pulumi.Input[str]
    env: dict[str, pulumi.Input[str]]
    secrets: dict[str, SecretRef]
    network_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    #: Labels of the long-lived Cloud Run resources (services, worker pools).
    labels: dict[str, str]
    #: Labels of what each release replaces: revision templates and jobs. They add the release.
    release_labels: dict[str, str]
    #: Secret versions and IAM grants a container must not start before.
    ready: list[pulumi.Resource] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [*self.env, *self.secrets]
        bad = sorted(n for n in names if n in RESERVED_ENV or n.startswith("X_GOOGLE_"))
        if bad:
            raise ValueError(f"Cloud Run reserves these env names: {', '.join(bad)}")
        if len(set(names)) != len(names):
            raise ValueError("an env name is both plain and secret")

    @property
    def env_names(self) -> list[str]:
        return sorted([*self.env, *self.secrets])

    def envs(self, env_cls: Any, source_cls: Any, ref_cls: Any) -> list[Any]:
        """The container env in a resource type's own Args classes (services, jobs and pools each have theirs)."""
        plain = [env_cls(name=name, value=value) for name, value in sorted(self.env.items())]
        secret = [
            env_cls(name=name, value_source=source_cls(secret_key_ref=ref_cls(secret=ref.secret, version=ref.version)))
            for name, ref in sorted(self.secrets.items())
        ]
        return plain + secret

    def vpc(self, access_cls: Any, interface_cls: Any) -> Any:
        """Direct VPC egress for private ranges only: Cloud SQL and Memorystore live there, the internet does not."""
        return access_cls(
            network_interfaces=[interface_cls(network=self.network_id, subnetwork=self.subnet_id)],
            egress="PRIVATE_RANGES_ONLY",
        )
