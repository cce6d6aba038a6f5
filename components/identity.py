"""Service accounts: one per workload, with only the project roles a Cloud Run workload needs to emit telemetry."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

ROLES = ("web", "worker", "jobs", "scheduler")
#: Telemetry only: logs and metrics (the app exports no traces). Data access (secrets, bucket) is granted on each
#: resource, never project-wide; the registry's read access goes to Cloud Run's service agent, from
#: ops/bootstrap.sh, which also lets the deployer grant these roles and no others.
RUNTIME_PROJECT_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter")


@dataclass
class IdentityArgs:
    project: str
    prefix: str
    depends_on: list[pulumi.Resource]


class Identity(pulumi.ComponentResource):
    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:identity:Identity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.accounts = {
            role: gcp.serviceaccount.Account(
                f"{name}-{role}",
                gcp.serviceaccount.AccountArgs(
                    project=args.project,
                    account_id=f"{args.prefix}-{role}",
                    display_name=f"Alle {role} ({args.prefix})",
                ),
                opts=child,
            )
            for role in ROLES
        }
        self.emails: dict[str, pulumi.Output[str]] = {role: a.email for role, a in self.accounts.items()}
        self.members: dict[str, pulumi.Output[str]] = {role: a.member for role, a in self.accounts.items()}
        self.grants = [
            gcp.projects.IAMMember(
                f"{name}-{role}-{project_role.split('/')[1]}",
                gcp.projects.IAMMemberArgs(project=args.project, role=project_role, member=self.members[role]),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for role in ("web", "worker", "jobs")
            for project_role in RUNTIME_PROJECT_ROLES
        ]
        self.register_outputs({"emails": self.emails})

    @property
    def runtime_members(self) -> list[pulumi.Output[str]]:
        """The identities that run the app's image and so read its secrets and bucket."""
        return [self.members[role] for role in ("web", "worker", "jobs")]
