"""Google APIs the stack uses: enabled once, never disabled on destroy (other stacks may share the project)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

SERVICES = {
    "billingbudgets": "billingbudgets.googleapis.com",
    "compute": "compute.googleapis.com",
    "dns": "dns.googleapis.com",
    "iam": "iam.googleapis.com",
    "logging": "logging.googleapis.com",
    "monitoring": "monitoring.googleapis.com",
    "redis": "redis.googleapis.com",
    "resourcemanager": "cloudresourcemanager.googleapis.com",
    "run": "run.googleapis.com",
    "scheduler": "cloudscheduler.googleapis.com",
    "secretmanager": "secretmanager.googleapis.com",
    "servicenetworking": "servicenetworking.googleapis.com",
    "sql": "sqladmin.googleapis.com",
    "storage": "storage.googleapis.com",
}


@dataclass
class ApisArgs:
    project: str


class Apis(pulumi.ComponentResource):
    def __init__(self, name: str, args: ApisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:apis:Apis", name, None, opts)
        self.services = {
            key: gcp.projects.Service(
                f"{name}-{key}",
                gcp.projects.ServiceArgs(
                    project=args.project,
                    service=api,
                    disable_on_destroy=False,
                    disable_dependent_services=False,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for key, api in SERVICES.items()
        }
        self.register_outputs({"services": list(SERVICES.values())})

    def needs(self, *keys: str) -> list[pulumi.Resource]:
        """The API resources a resource must wait for."""
        return [self.services[key] for key in keys]
